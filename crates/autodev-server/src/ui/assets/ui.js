// Autodev's UI: live updates without a reload, and nothing else.
// - A run's page follows the run's events (EventSource on /runs/{id}/stream) and, after each
//   burst of events, fetches the page's content again (/runs/{id}/live) and swaps it in.
// - The runs list fetches its rows again every few seconds (new runs appear, states change).
// Forms work without this script; it only keeps pages current.
"use strict";
(function () {
  function swap(el, html) {
    if (el.innerHTML === html) return;
    // Keep what the user is typing in a comment box.
    const typing = document.activeElement && el.contains(document.activeElement) && document.activeElement.tagName === "TEXTAREA";
    if (typing) return;
    el.innerHTML = html;
  }

  function followRun(el) {
    const live = el.dataset.live, streamUrl = el.dataset.stream;
    if (!live || !streamUrl || !window.EventSource) return;
    let pending = null, finished = false;
    const refresh = () => {
      pending = null;
      fetch(live, { credentials: "same-origin", headers: { "accept": "text/html" } })
        .then((r) => { if (r.headers.get("x-autodev-run") === "finished") finished = true; return r.ok ? r.text() : null; })
        .then((html) => { if (html !== null) swap(el, html); if (finished) source.close(); })
        .catch(() => {});
    };
    const source = new EventSource(streamUrl, { withCredentials: true });
    const later = () => { if (!pending) pending = setTimeout(refresh, 250); };
    source.onmessage = later;
    // Named events (the run's event kinds) arrive as their own types.
    ["state_changed", "task_state_changed", "agent_step", "tool_finished", "model_call", "test_run",
     "plan_accepted", "plan_approved", "delivered", "warning", "evidence", "protected_path",
     "provider_fallback", "plan_revision_requested", "task_committed", "task_merged"].forEach((k) => source.addEventListener(k, later));
    source.onerror = () => { if (finished) source.close(); else later(); };
  }

  function followList(table) {
    const url = table.dataset.live;
    if (!url) return;
    const body = table.querySelector("tbody");
    setInterval(() => {
      if (document.hidden) return;
      fetch(url, { credentials: "same-origin" }).then((r) => (r.ok ? r.text() : null)).then((html) => { if (html !== null) swap(body, html); }).catch(() => {});
    }, 2000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const run = document.getElementById("live");
    if (run) followRun(run);
    const runs = document.getElementById("runs");
    if (runs) followList(runs);
  });
})();
