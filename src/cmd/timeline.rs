//! `promptgate timeline`: the 2am view of one route (see [`crate::report::timeline`]).

use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::registry::Registry;
use crate::report::timeline::{self, TimelineSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Html,
}

pub struct TimelineArgs {
    pub spec: TimelineSpec,
    pub at_us: Option<i64>,
    pub format: Format,
    pub out: Option<PathBuf>,
}

pub async fn run(lake: &Lake, registry: &Registry, args: &TimelineArgs) -> Result<i32> {
    args.spec.check()?;
    let ctx = crate::query::lake_session(lake).await?;
    let history = registry.history()?;
    let mut text: Vec<u8> = Vec::new();
    if let Some(at) = args.at_us {
        let a = timeline::at_instant(&ctx, &args.spec, at, history).await?;
        match args.format {
            Format::Json => {
                serde_json::to_writer_pretty(&mut text, &a)
                    .map_err(|e| Error::runtime(e.to_string()))?;
                text.push(b'\n');
            }
            Format::Table => timeline::write_at(&a, args.spec.bucket_us as f64 / 1e6, &mut text)?,
            Format::Html => {
                return Err(Error::usage("--at answers in text or JSON, not HTML")
                    .with_hint("drop --format html, or drop --at for the page with the charts"));
            }
        }
    } else {
        let t = timeline::build(&ctx, &args.spec, history).await?;
        match args.format {
            Format::Table => timeline::write_table(&t, &mut text)?,
            Format::Json => {
                serde_json::to_writer_pretty(&mut text, &t)
                    .map_err(|e| Error::runtime(e.to_string()))?;
                text.push(b'\n');
            }
            Format::Html => {
                text = timeline::to_html(&t).into_bytes();
            }
        }
    }
    match &args.out {
        Some(path) => {
            crate::lake::write_file_atomic(path, &text)?;
            eprintln!("wrote {}", path.display());
        }
        None => {
            let mut out = super::stdout();
            out.write_all(&text)
                .map_err(|e| Error::io("cannot write", std::path::Path::new("stdout"), e))?;
            super::flush(&mut out)?;
        }
    }
    Ok(0)
}
