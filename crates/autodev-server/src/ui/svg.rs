//! Pictures drawn on the server as SVG: the plan's DAG and the usage bar chart.
use std::collections::HashMap;
use std::fmt::Write as _;

use autodev_store::TaskRow;

/// Escapes text for SVG (XML).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n - 1).collect::<String>()) }
}

/// The task DAG: a column per depth (a task sits one column right of its deepest
/// dependency), a box per task coloured by its state and labelled with it (colour is never
/// the only signal), an arrow per dependency.
pub fn dag(tasks: &[TaskRow]) -> String {
    const W: i64 = 190;
    const H: i64 = 52;
    const GAP_X: i64 = 60;
    const GAP_Y: i64 = 18;
    let keys: HashMap<&str, usize> = tasks.iter().enumerate().map(|(i, t)| (t.task_key.as_str(), i)).collect();
    let deps: Vec<Vec<usize>> =
        tasks.iter().map(|t| t.deps().iter().filter_map(|d| keys.get(d.as_str()).copied()).collect()).collect();
    // Depth by relaxation (the plan is acyclic; the bound guards a corrupt one).
    let mut depth = vec![0usize; tasks.len()];
    for _ in 0..tasks.len() {
        let mut changed = false;
        for i in 0..tasks.len() {
            let d = deps[i].iter().map(|&j| depth[j] + 1).max().unwrap_or(0);
            if d > depth[i] {
                depth[i] = d;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut row_in_col: HashMap<usize, i64> = HashMap::new();
    let mut pos = vec![(0i64, 0i64); tasks.len()];
    for i in 0..tasks.len() {
        let r = row_in_col.entry(depth[i]).or_insert(0);
        pos[i] = (depth[i] as i64 * (W + GAP_X) + 10, *r * (H + GAP_Y) + 10);
        *r += 1;
    }
    let width = pos.iter().map(|p| p.0 + W + 10).max().unwrap_or(100);
    let height = pos.iter().map(|p| p.1 + H + 10).max().unwrap_or(60);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="dag" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="Plan: {} tasks"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>"#,
        tasks.len()
    );
    for (i, ds) in deps.iter().enumerate() {
        for &j in ds {
            let (x1, y1) = (pos[j].0 + W, pos[j].1 + H / 2);
            let (x2, y2) = (pos[i].0, pos[i].1 + H / 2);
            let mid = (x1 + x2) / 2;
            let _ = write!(
                out,
                r#"<path class="edge" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" marker-end="url(#arrow)"/>"#
            );
        }
    }
    for (i, t) in tasks.iter().enumerate() {
        let (x, y) = pos[i];
        let _ = write!(
            out,
            r#"<g class="node s-{}"><title>{}: {} ({})</title><rect x="{x}" y="{y}" width="{W}" height="{H}" rx="8"/><text x="{}" y="{}" class="k">{} · {}</text><text x="{}" y="{}">{}</text></g>"#,
            esc(&t.state),
            esc(&t.task_key),
            esc(&t.title),
            esc(&t.state),
            x + 10,
            y + 20,
            esc(&t.task_key),
            esc(&t.state),
            x + 10,
            y + 40,
            esc(&cut(&t.title, 24)),
        );
    }
    out.push_str("</svg>");
    out
}

/// A bar chart of cost per day, with each bar's value in its label.
pub fn bars(days: &[(String, i64)]) -> String {
    const BAR: i64 = 22;
    const GAP: i64 = 6;
    const H: i64 = 160;
    let max = days.iter().map(|d| d.1).max().unwrap_or(0).max(1);
    let width = (days.len() as i64 * (BAR + GAP)).max(BAR) + 60;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="bars" viewBox="0 0 {width} {}" width="{width}" height="{}" role="img" aria-label="Cost per day">"#,
        H + 50,
        H + 50
    );
    for (i, (day, micros)) in days.iter().enumerate() {
        let h = (micros * H / max).max(1);
        let x = 40 + i as i64 * (BAR + GAP);
        let y = 10 + H - h;
        let label = format!("{day}: ${:.4}", *micros as f64 / 1e6);
        let _ = write!(
            out,
            r#"<g><title>{}</title><rect class="bar" x="{x}" y="{y}" width="{BAR}" height="{h}"/><text class="day" x="{}" y="{}" transform="rotate(60 {} {})">{}</text></g>"#,
            esc(&label),
            x + 4,
            H + 22,
            x + 4,
            H + 22,
            esc(day.get(5..).unwrap_or(day))
        );
    }
    let _ = write!(
        out,
        r#"<text class="axis" x="0" y="18">${:.2}</text><text class="axis" x="0" y="{}">$0</text>"#,
        max as f64 / 1e6,
        H + 10
    );
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(key: &str, deps: &[&str], state: &str) -> TaskRow {
        TaskRow {
            run_id: "r".into(),
            task_key: key.into(),
            position: 0,
            title: format!("Do <{key}>"),
            description: String::new(),
            depends_on: serde_json::to_string(deps).unwrap_or_default(),
            acceptance: "[]".into(),
            state: state.into(),
            reason: None,
            summary: None,
            commit_sha: None,
            updated_at: 0,
        }
    }

    #[test]
    fn the_dag_puts_a_task_right_of_its_dependencies_and_escapes_text() {
        let svg = dag(&[task("t1", &[], "done"), task("t2", &["t1"], "running"), task("t3", &["t1", "t2"], "pending")]);
        assert_eq!(svg.matches("<path class=\"edge\"").count(), 3);
        assert!(svg.contains("Do &lt;t1&gt;") && !svg.contains("<t1>"));
        assert!(svg.contains(r#"class="node s-running""#) && svg.contains("t2 · running"));
        // Three columns.
        assert!(
            svg.contains(r#"<rect x="10""#) && svg.contains(r#"<rect x="260""#) && svg.contains(r#"<rect x="510""#)
        );
    }
}
