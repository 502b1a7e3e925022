//! The documentation's links: every relative link in README.md and in the Markdown files under
//! docs/ names a file that exists, and every `#anchor` names a heading of its target, as GitHub
//! renders it. The README links into docs/ and back, so a heading renamed or a file moved must
//! fail here rather than on a reader.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// README.md and every `.md` under docs/, in a stable order.
fn documents(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{dir:?}: {err}"));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                found.push(path);
            }
        }
    }
    let mut found = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut found);
    found.sort();
    found
}

/// The lines outside fenced code blocks, each block left as one blank line: a heading or a
/// link inside one is an example.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    // The open fence's character and length; it closes with at least as many of the same.
    let mut fence: Option<(char, usize)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = marker.map_or(0, |c| trimmed.chars().take_while(|x| *x == c).count());
        match (fence, marker) {
            (None, Some(c)) if run >= 3 => {
                fence = Some((c, run));
                lines.push("");
            }
            (Some((open, length)), Some(c))
                if c == open && run >= length && trimmed[run..].trim().is_empty() =>
            {
                fence = None
            }
            (None, _) => lines.push(line),
            (Some(_), _) => {}
        }
    }
    lines
}

/// The paragraphs outside fenced code blocks, each on one line: a link's text may wrap.
fn paragraphs(text: &str) -> Vec<String> {
    prose_lines(text)
        .split(|line| line.trim().is_empty())
        .filter(|lines| !lines.is_empty())
        .map(|lines| lines.join(" "))
        .collect()
}

/// GitHub's anchor for a heading's text: lower-case, punctuation dropped except `-` and `_`,
/// each space a `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The text a reader sees: a link's text without its target.
fn rendered(text: &str) -> String {
    links(text).iter().fold(text.to_string(), |text, link| {
        text.replace(&format!("[{}]({})", link.text, link.target), &link.text)
    })
}

/// The anchors of a document's headings; a repeated heading gets `-1`, `-2`, ... as on GitHub.
fn anchors(text: &str) -> HashSet<String> {
    let mut taken = HashSet::new();
    for line in prose_lines(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        let Some(title) = line[hashes..].strip_prefix(' ') else {
            continue;
        };
        if !(1..=6).contains(&hashes) {
            continue;
        }
        let base = slug(&rendered(title.trim_end().trim_end_matches('#')));
        let mut anchor = base.clone();
        let mut n = 0;
        while !taken.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    taken
}

struct Link {
    text: String,
    target: String,
}

/// The `[text](target)` links of a paragraph, images included, outside inline code.
fn links(line: &str) -> Vec<Link> {
    // Inline code spans are blanked so that `[[links]](...)`-like examples are not links.
    let mut prose = String::with_capacity(line.len());
    for (index, part) in line.split('`').enumerate() {
        if index % 2 == 0 {
            prose.push_str(part);
        } else {
            prose.extend(std::iter::repeat_n(' ', part.len() + 2));
        }
    }
    let chars: Vec<char> = prose.chars().collect();
    let mut found = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        if chars[at] != '[' {
            at += 1;
            continue;
        }
        // The matching `]`, allowing brackets nested in the text.
        let mut depth = 0;
        let mut close = None;
        for (offset, c) in chars[at..].iter().enumerate() {
            match c {
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(at + offset);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else { break };
        if chars.get(close + 1) != Some(&'(') {
            at += 1;
            continue;
        }
        let Some(end) = chars[close + 2..].iter().position(|c| *c == ')') else {
            break;
        };
        let inside: String = chars[close + 2..close + 2 + end].iter().collect();
        found.push(Link {
            text: chars[at + 1..close].iter().collect(),
            // A title after the target (`(file.md "title")`) is not part of it.
            target: inside.split_whitespace().next().unwrap_or("").to_string(),
        });
        at = close + 2 + end + 1;
    }
    found
}

fn external(target: &str) -> bool {
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| target.to_ascii_lowercase().starts_with(scheme))
}

/// Every broken link of the documents under `root`, as "file: target: why", and how many
/// relative links were checked.
fn broken_links(root: &Path) -> (Vec<String>, usize) {
    let mut broken = Vec::new();
    let mut checked = 0;
    for document in documents(root) {
        let text = std::fs::read_to_string(&document).expect("a document");
        let name = document.strip_prefix(root).unwrap_or(&document).display();
        for paragraph in paragraphs(&text) {
            for Link { target, .. } in links(&paragraph) {
                if external(&target) {
                    continue;
                }
                checked += 1;
                let (file, anchor) = match target.split_once('#') {
                    Some((file, anchor)) => (file, Some(anchor)),
                    None => (target.as_str(), None),
                };
                let path = if file.is_empty() {
                    document.clone()
                } else {
                    document.parent().expect("a folder").join(file)
                };
                if !path.exists() {
                    broken.push(format!("{name}: {target}: no such file"));
                    continue;
                }
                let Some(anchor) = anchor else { continue };
                let headings = match std::fs::read_to_string(&path) {
                    Ok(target_text) if path.extension().is_some_and(|ext| ext == "md") => {
                        anchors(&target_text)
                    }
                    _ => HashSet::new(),
                };
                if !headings.contains(anchor) {
                    broken.push(format!("{name}: {target}: no heading with this anchor"));
                }
            }
        }
    }
    (broken, checked)
}

#[test]
fn every_link_between_the_documents_leads_somewhere() {
    let (broken, checked) = broken_links(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    // A parser that found nothing would pass the check above.
    assert!(checked >= 20, "only {checked} relative links found");
}

#[test]
fn anchors_follow_githubs_rule() {
    let text = "# What an answer guarantees\n\
                ## `GET /r/{link}`: a link\n\
                ```sh\n# not a heading\n```\n\
                ## Logs\n## Logs\n## Logs\n\
                ### [The dashboard](x.md), set up\n\
                #not a heading\n";
    let mut found: Vec<String> = anchors(text).into_iter().collect();
    found.sort();
    assert_eq!(
        found,
        [
            "get-rlink-a-link",
            "logs",
            "logs-1",
            "logs-2",
            "the-dashboard-set-up",
            "what-an-answer-guarantees",
        ]
    );
}

#[test]
fn a_links_text_may_wrap_but_a_fence_ends_the_paragraph() {
    let text = "pushes the [aggregates\ndocuments](api.md#x) itself\n[a\n```\n](b.md)\n```\n";
    let targets: Vec<String> = paragraphs(text)
        .iter()
        .flat_map(|paragraph| links(paragraph))
        .map(|link| link.target)
        .collect();
    assert_eq!(targets, ["api.md#x"]);
}

#[test]
fn links_are_found_outside_code() {
    let line = "See [the API](docs/api.md#error-codes), ![a picture](docs/dashboard.png) and \
                `[[links]](not.md)`; [text] (not a link).";
    let targets: Vec<String> = links(line).into_iter().map(|link| link.target).collect();
    assert_eq!(targets, ["docs/api.md#error-codes", "docs/dashboard.png"]);
}
