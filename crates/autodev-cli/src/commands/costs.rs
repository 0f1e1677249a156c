//! `autodev costs`: what model calls cost, by project, model, day, run, kind (runs' calls or
//! questions to the code index) or API key (the API's `GET /api/v1/usage` from the command
//! line, plus the costliest runs).
use std::collections::BTreeMap;
use std::path::Path;

use crate::Exit;
use crate::context::{open_store, store_error};

pub async fn costs(home: &Path, days: i64, by: &str, json: bool) -> Exit {
    let inner = async {
        if !(1..=366).contains(&days) {
            return Err(Exit::Usage("--days must be 1 to 366".into()));
        }
        let store = open_store(home).await?;
        let since = autodev_store::now_ms() - days * 86_400_000;
        // (key, calls, input tokens, output tokens, cost µ$)
        let mut rows: Vec<(String, i64, i64, i64, i64)> = Vec::new();
        if by == "run" {
            for (short, title, project, input, output, cost) in
                store.costs_by_run(since, 100).await.map_err(store_error)?
            {
                let project = if project.is_empty() { String::new() } else { format!(" [{project}]") };
                rows.push((format!("{short} {title}{project}"), 0, input, output, cost));
            }
        } else if by == "key" {
            let mut grouped: BTreeMap<String, (i64, i64, i64, i64)> = BTreeMap::new();
            for u in store.usage_by_key(since).await.map_err(store_error)? {
                let key = if u.key.is_empty() { "(CLI or webhook)".to_string() } else { u.key.clone() };
                let e = grouped.entry(format!("{key} ({})", u.kind)).or_default();
                e.0 += u.calls;
                e.1 += u.input_tokens;
                e.2 += u.output_tokens;
                e.3 += u.cost_micros;
            }
            rows = grouped.into_iter().map(|(k, (c, i, o, m))| (k, c, i, o, m)).collect();
            rows.sort_by_key(|r| std::cmp::Reverse(r.4));
        } else {
            let mut grouped: BTreeMap<String, (i64, i64, i64, i64)> = BTreeMap::new();
            for u in store.usage(since).await.map_err(store_error)? {
                let key = match by {
                    "kind" => u.kind.clone(),
                    "project" if u.project.is_empty() => "(autodev run)".to_string(),
                    "project" => u.project.clone(),
                    "model" => u.model.clone(),
                    _ => u.day.clone(),
                };
                let e = grouped.entry(key).or_default();
                e.0 += u.calls;
                e.1 += u.input_tokens;
                e.2 += u.output_tokens;
                e.3 += u.cost_micros;
            }
            rows = grouped.into_iter().map(|(k, (c, i, o, m))| (k, c, i, o, m)).collect();
            if by == "day" {
                rows.reverse();
            } else {
                rows.sort_by_key(|r| std::cmp::Reverse(r.4));
            }
        }
        let total: i64 = rows.iter().map(|r| r.4).sum();
        if json {
            let items: Vec<serde_json::Value> = rows
                .iter()
                .map(|(k, c, i, o, m)| {
                    let mut v = serde_json::json!({"input_tokens": i, "output_tokens": o, "cost_usd": *m as f64 / 1e6});
                    v[by] = serde_json::json!(k);
                    if by != "run" {
                        v["calls"] = serde_json::json!(c);
                    }
                    v
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"days": days, "by": by, "rows": items, "total_cost_usd": total as f64 / 1e6})
            );
            return Ok(Exit::Ok);
        }
        println!("{:<48} {:>12} {:>12} {:>11}", by, "input tok", "output tok", "cost");
        for (k, _, i, o, m) in &rows {
            let k: String = k.chars().take(48).collect();
            println!("{k:<48} {i:>12} {o:>12} {:>11}", format!("${:.4}", *m as f64 / 1e6));
        }
        println!(
            "{:<48} {:>12} {:>12} {:>11}",
            format!("total, last {days} days"),
            "",
            "",
            format!("${:.4}", total as f64 / 1e6)
        );
        Ok::<Exit, Exit>(Exit::Ok)
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}
