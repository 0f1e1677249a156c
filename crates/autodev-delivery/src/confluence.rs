//! Confluence Cloud: a page per run with its report, under a configured space and parent page,
//! created when the run ends and updated (a new version) if it is delivered again.
//!
//! REST (`/wiki/rest/api/content`), basic auth with an account's email and API token. The
//! report's Markdown becomes the storage format's XHTML through pulldown-cmark. No maintained
//! Confluence crate exists (CRATES.md); these are three typed calls.
use autodev_store::Store;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::target::{CallError, Milestone, Target};
use crate::webhook::{client, send};

#[derive(Clone)]
pub struct ConfluenceConfig {
    /// `https://your-domain.atlassian.net` (the API is under `/wiki`).
    pub url: String,
    pub email: String,
    pub token: SecretString,
    /// The space key the pages go in.
    pub space: String,
    /// The page they go under, if any.
    pub parent_id: Option<String>,
}

pub struct Confluence {
    config: ConfluenceConfig,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Found {
    #[serde(default)]
    results: Vec<Page>,
}

#[derive(Deserialize)]
struct Page {
    id: String,
    #[serde(default)]
    version: Option<Version>,
    #[serde(default, rename = "_links")]
    links: Option<Links>,
}

#[derive(Deserialize)]
struct Version {
    number: u64,
}

#[derive(Deserialize)]
struct Links {
    #[serde(default)]
    webui: Option<String>,
}

/// Markdown as Confluence storage format (XHTML). Raw HTML in the report (an agent wrote it)
/// is shown as text: it could be neither trusted nor well-formed.
pub fn storage_format(markdown: &str) -> String {
    use pulldown_cmark::Event;
    let parser = pulldown_cmark::Parser::new_ext(markdown, pulldown_cmark::Options::ENABLE_TABLES).map(|e| match e {
        Event::Html(t) | Event::InlineHtml(t) => Event::Text(t),
        other => other,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, parser);
    html
}

impl Confluence {
    pub fn new(config: ConfluenceConfig) -> Self {
        Self { config, http: client() }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/wiki/rest/api{path}", self.config.url.trim_end_matches('/')))
            .basic_auth(&self.config.email, Some(self.config.token.expose_secret()))
            .header("accept", "application/json")
    }
}

#[async_trait::async_trait]
impl Target for Confluence {
    fn name(&self) -> String {
        "confluence".into()
    }

    fn wants(&self, m: &Milestone<'_>) -> bool {
        matches!(m.topic, "run.succeeded" | "run.failed")
    }

    async fn deliver(&self, store: &Store, m: &Milestone<'_>) -> Result<String, CallError> {
        // The title is the page's key in its space: the same run always finds its page.
        let title = format!("Autodev run {}: {}", m.run.short_id, m.run.title);
        let report = m
            .report
            .map(str::to_string)
            .unwrap_or_else(|| format!("# {}\n\nThe run is {} and wrote no report.\n", m.run.title, m.run.state));
        let mut markdown = format!("{}\n\nRun: {}\n\n", m.headline(), m.run_url());
        if let Some(pr) = m.links.get("github.pull_request").or_else(|| m.links.get("gitlab.merge_request")) {
            markdown.push_str(&format!("Pull request: {pr}\n\n"));
        }
        markdown.push_str(&report);
        let body = json!({"storage": {"value": storage_format(&markdown), "representation": "storage"}});
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("spaceKey", &self.config.space)
            .append_pair("title", &title)
            .append_pair("expand", "version")
            .finish();
        let (_, text) = send(self.request(reqwest::Method::GET, &format!("/content?{query}"))).await?;
        let found: Found = serde_json::from_str(&text)
            .map_err(|e| CallError::permanent(None, format!("unexpected answer from Confluence: {e}")))?;
        let (page, verb) = match found.results.into_iter().next() {
            Some(page) => {
                let next = page.version.as_ref().map_or(1, |v| v.number) + 1;
                let update = self.request(reqwest::Method::PUT, &format!("/content/{}", page.id)).json(&json!({
                    "type": "page",
                    "title": title,
                    "version": {"number": next},
                    "body": body,
                }));
                let (_, text) = send(update).await?;
                (serde_json::from_str::<Page>(&text).unwrap_or(page), "updated")
            }
            None => {
                let mut create = json!({
                    "type": "page",
                    "title": title,
                    "space": {"key": self.config.space},
                    "body": body,
                });
                if let Some(parent) = &self.config.parent_id {
                    create["ancestors"] = json!([{"id": parent}]);
                }
                let (_, text) = send(self.request(reqwest::Method::POST, "/content").json(&create)).await?;
                let page: Page = serde_json::from_str(&text)
                    .map_err(|e| CallError::permanent(None, format!("unexpected answer from Confluence: {e}")))?;
                (page, "created")
            }
        };
        let url = match page.links.and_then(|l| l.webui) {
            Some(webui) => format!("{}/wiki{webui}", self.config.url.trim_end_matches('/')),
            None => page.id.clone(),
        };
        store
            .set_run_link(&m.run.id, "confluence.page", &url)
            .await
            .map_err(|e| CallError::permanent(None, format!("could not record the page: {e}")))?;
        Ok(format!("page {verb}: {url}"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn markdown_becomes_xhtml() {
        let html = super::storage_format("# Report\n\n- one\n- two\n\n`code` & <tag>\n\n<div onclick=x>\n");
        assert!(html.contains("<h1>Report</h1>"), "{html}");
        assert!(html.contains("<li>one</li>"), "{html}");
        assert!(html.contains("&amp;"), "{html}");
        assert!(!html.contains("<tag>") && !html.contains("<div"), "{html}");
    }
}
