//! The run's patch (`changes.patch`, unified diff from `git diff`) as HTML: a section per file
//! with its added and removed lines marked (a `+`/`-` sign and a colour, and for screen
//! readers the words), capped so a huge patch does not make a huge page.
use maud::{Markup, html};

/// Lines shown before the rest is left to the patch download.
const MAX_LINES: usize = 4_000;

struct File<'a> {
    name: String,
    lines: Vec<&'a str>,
    added: usize,
    removed: usize,
}

fn files(patch: &str) -> Vec<File<'_>> {
    let mut out: Vec<File> = Vec::new();
    for line in patch.lines() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            // `a/path b/path`: the new side's name.
            let name = rest.rsplit_once(" b/").map_or(rest, |(_, b)| b).to_string();
            out.push(File { name, lines: Vec::new(), added: 0, removed: 0 });
            continue;
        }
        let Some(file) = out.last_mut() else { continue };
        if line.starts_with("+++") || line.starts_with("---") || line.starts_with("index ") {
            continue;
        }
        if line.starts_with('+') {
            file.added += 1;
        } else if line.starts_with('-') {
            file.removed += 1;
        }
        file.lines.push(line);
    }
    out
}

pub fn render(patch: &str) -> Markup {
    let files = files(patch);
    // Lines shown per file: in order, until the page's budget is spent.
    let mut budget = MAX_LINES;
    let shown: Vec<usize> = files
        .iter()
        .map(|f| {
            let n = f.lines.len().min(budget);
            budget -= n;
            n
        })
        .collect();
    html! {
        p { (files.len()) " file(s) changed: "
            @for (i, f) in files.iter().enumerate() { @if i > 0 { ", " } a href=(format!("#file-{i}")) { code { (f.name) } } }
        }
        @for (i, f) in files.iter().enumerate() {
            section.file id=(format!("file-{i}")) {
                h3 { code { (f.name) } " " span.ok { "+" (f.added) } " " span.bad { "−" (f.removed) } }
                pre.diff {
                    @for line in f.lines.iter().take(shown[i]) {
                        @if line.starts_with('+') { ins { span.sr-only { "added: " } (line) } "\n" }
                        @else if line.starts_with('-') { del { span.sr-only { "removed: " } (line) } "\n" }
                        @else if line.starts_with("@@") { span.hunk { (line) } "\n" }
                        @else { (line) "\n" }
                    }
                }
                @if f.lines.len() > shown[i] { p.help { "… the rest of this file is in the patch." } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_is_split_per_file_with_its_lines_marked() {
        let patch = "diff --git a/greeting.txt b/greeting.txt\nnew file mode 100644\nindex 0000000..ce01362\n--- /dev/null\n+++ b/greeting.txt\n@@ -0,0 +1 @@\n+hello <b>\ndiff --git a/README.md b/README.md\nindex 1..2 100644\n--- a/README.md\n+++ b/README.md\n@@ -1,2 +1,2 @@\n # Project\n-old\n+new\n";
        let html = render(patch).into_string();
        assert!(html.contains("2 file(s) changed"), "{html}");
        assert!(html.contains("<ins><span class=\"sr-only\">added: </span>+hello &lt;b&gt;</ins>"), "{html}");
        assert!(html.contains("<del><span class=\"sr-only\">removed: </span>-old</del>"), "{html}");
        assert!(
            html.contains("<code>README.md</code> <span class=\"ok\">+1</span> <span class=\"bad\">−1</span>"),
            "{html}"
        );
    }
}
