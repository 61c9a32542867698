//! Model answers are Markdown: the sheet shows them rendered (headings, lists, code blocks,
//! tables), as HTML that cannot run, load or link anything, whatever an answer contains.
//!
//! pulldown-cmark parses; before its HTML writer sees the events, every piece of raw HTML in
//! an answer becomes text (escaped, so `<script>` reads as `<script>`), a link becomes its text
//! followed by its destination in parentheses (nothing to click), and an image becomes
//! `[image: alt] (url)` (nothing to load). What is left are the writer's own tags with escaped
//! text: `p`, `h1`-`h6`, lists, `pre`/`code`, tables, `blockquote`, `em`, `strong`, `del`,
//! `hr`, `br`, and the disabled checkbox of a task list item. The page also forbids every load
//! with its Content-Security-Policy, in case anything ever slipped through.

use pulldown_cmark::{CodeBlockKind, CowStr, Event, Options, Parser, Tag, TagEnd};

/// The answer `text` (Markdown) as HTML safe to put into the sheet's page.
pub fn to_safe_html(text: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    // Destinations of the links and images open around the current event.
    let mut open: Vec<(String, bool)> = Vec::new();
    let events = Parser::new_ext(text, options).flat_map(|e| -> Vec<Event<'_>> {
        match e {
            Event::Html(h) | Event::InlineHtml(h) => vec![Event::Text(h)],
            // A block of raw HTML reads as what it is: code.
            Event::Start(Tag::HtmlBlock) => {
                vec![Event::Start(Tag::CodeBlock(CodeBlockKind::Indented))]
            }
            Event::End(TagEnd::HtmlBlock) => vec![Event::End(TagEnd::CodeBlock)],
            Event::Start(Tag::Link { dest_url, .. }) => {
                open.push((dest_url.into_string(), false));
                Vec::new()
            }
            Event::Start(Tag::Image { dest_url, .. }) => {
                open.push((dest_url.into_string(), true));
                vec![Event::Text(CowStr::Borrowed("[image: "))]
            }
            Event::End(TagEnd::Link | TagEnd::Image) => {
                let Some((dest, image)) = open.pop() else {
                    return Vec::new();
                };
                let mut out = Vec::new();
                if image {
                    out.push(Event::Text(CowStr::Borrowed("]")));
                }
                if !dest.is_empty() {
                    out.push(Event::Text(format!(" ({dest})").into()));
                }
                out
            }
            other => vec![other],
        }
    });
    let mut out = String::with_capacity(text.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

#[cfg(test)]
mod tests {
    use super::to_safe_html;

    /// Tags the renderer may emit; anything else in its output is a bug.
    const ALLOWED: [&str; 27] = [
        "p",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "ul",
        "ol",
        "li",
        "pre",
        "code",
        "em",
        "strong",
        "del",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "blockquote",
        "hr",
        "br",
        "input",
        "sup",
        "div",
    ];

    fn tags(html: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = html;
        while let Some(i) = rest.find('<') {
            rest = &rest[i + 1..];
            let name: String = rest
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            out.push(name.to_ascii_lowercase());
        }
        out
    }

    #[test]
    fn markdown_is_rendered() {
        let html = to_safe_html(
            "# Steps\n\n1. **Open** settings\n2. Pick `Reset`\n\n```sh\nrm -rf /tmp/x\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- [x] done\n",
        );
        for want in [
            "<h1>Steps</h1>",
            "<ol>",
            "<strong>Open</strong>",
            "<code>Reset</code>",
            "<pre><code class=\"language-sh\">rm -rf /tmp/x\n</code></pre>",
            "<table>",
            "<td>2</td>",
            "type=\"checkbox\"",
        ] {
            assert!(html.contains(want), "{want} in {html}");
        }
    }

    #[test]
    fn hostile_answers_stay_text() {
        let cases = [
            "<script>window.pwned = 1</script>",
            "Hi <img src=x onerror=\"window.pwned=1\"> there",
            "<iframe src=\"https://evil.example\"></iframe>",
            "[click me](javascript:alert(1))",
            "![tracker](https://evil.example/p.png)",
            "<https://evil.example/auto>",
            "<a href=\"https://evil.example\">x</a>",
            "<style>body{display:none}</style>",
            "<svg onload=alert(1)>",
            "```html\n<script>alert(1)</script>\n```",
            "<div onclick=\"x()\">\n\n*md inside*\n\n</div>",
            "[ref]\n\n[ref]: https://evil.example \"t\"",
            "<!-- <script>alert(1)</script> -->",
            "<details open ontoggle=alert(1)>",
        ];
        for case in cases {
            let html = to_safe_html(case);
            for tag in tags(&html) {
                assert!(
                    ALLOWED.contains(&tag.as_str()),
                    "<{tag}> from {case:?}: {html}"
                );
            }
            // Inside every tag the renderer wrote: no link, no source, no handler. (Text may
            // mention them: it is escaped, so `<` never starts a tag there.)
            for tag in html
                .split('<')
                .skip(1)
                .map(|t| t.split('>').next().unwrap_or(""))
            {
                let tag = tag.to_ascii_lowercase();
                assert!(
                    !tag.contains("href") && !tag.contains("src") && !tag.contains(" on"),
                    "<{tag}> from {case:?}: {html}"
                );
            }
        }
        let link = to_safe_html("[click me](javascript:alert(1))");
        assert_eq!(link, "<p>click me (javascript:alert(1))</p>\n");
        let image = to_safe_html("![tracker](https://evil.example/p.png)");
        assert_eq!(
            image,
            "<p>[image: tracker] (https://evil.example/p.png)</p>\n"
        );
        let script = to_safe_html("<script>window.pwned = 1</script>");
        assert!(
            script.contains("&lt;script&gt;window.pwned = 1&lt;/script&gt;"),
            "{script}"
        );
    }
}
