// Autodev's UI: live updates without a reload, and nothing else.
// - A run's page follows the run's events (EventSource on /runs/{id}/stream) and, after each
//   burst of events, fetches the page's content again (/runs/{id}/live) and swaps it in.
// - The runs list fetches its rows again every few seconds (new runs appear, states change).
// - The ask page streams its answer (POST /ask/stream, server-sent events) into the page as it
//   is written, then shows the conversation with the answer's checked citations.
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

  function streamAsk(form) {
    const url = form.dataset.stream, out = document.getElementById("live-answer");
    if (!url || !out || !window.fetch || !window.TextDecoder) return;
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      out.hidden = false;
      out.textContent = "";
      let pieces = 0, buffer = "";
      const fail = (message) => { out.textContent = message; out.classList.add("error"); button.disabled = false; };
      const handle = (block) => {
        const event = (block.match(/^event: (.*)$/m) || [])[1];
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (!event || !data) return;
        const v = JSON.parse(data);
        if (event === "delta") {
          pieces += 1;
          document.body.dataset.streamed = String(pieces);
          out.textContent += v.text;
        } else if (event === "answer") {
          const next = form.action + "?conversation=" + encodeURIComponent(v.conversation) + "&project=" + encodeURIComponent(v.project);
          fetch(next, { credentials: "same-origin" }).then((r) => r.text()).then((html) => {
            const doc = new DOMParser().parseFromString(html, "text/html");
            document.querySelector("main").innerHTML = doc.querySelector("main").innerHTML;
            history.replaceState(null, "", next);
            const again = document.getElementById("ask-form");
            if (again) streamAsk(again);
            // The answer just given is the conversation's last turn; its citations, checked.
            const list = document.createElement("ul");
            list.className = "citations";
            (v.citations || []).forEach((c) => {
              const li = document.createElement("li"), code = document.createElement("code"), badge = document.createElement("span");
              code.textContent = c.path + ":" + c.start_line + "-" + c.end_line;
              badge.className = "badge " + (c.valid ? "ok" : "bad");
              badge.textContent = c.valid ? "checked" : "not in the index";
              li.append(code, " ", badge);
              list.append(li);
            });
            const heading = document.createElement("h3");
            heading.textContent = v.citations_ok ? "Citations of the last answer" : "Citations of the last answer (some do not check out: read it with care)";
            document.querySelector("main").append(heading, list);
          }).catch(() => fail("The answer was given, but the page could not be refreshed: reload it."));
        } else if (event === "error") {
          fail(v.error && v.error.message ? v.error.message : "The question could not be answered.");
        }
      };
      fetch(url, { method: "POST", credentials: "same-origin", body: new URLSearchParams(new FormData(form)) })
        .then((r) => {
          if (!r.ok) return r.text().then(fail);
          const reader = r.body.getReader(), decoder = new TextDecoder();
          const pump = () => reader.read().then(({ done, value }) => {
            if (done) return;
            buffer += decoder.decode(value, { stream: true });
            let at;
            while ((at = buffer.indexOf("\n\n")) >= 0) { handle(buffer.slice(0, at)); buffer = buffer.slice(at + 2); }
            return pump();
          });
          return pump();
        })
        .catch(() => fail("The question could not be sent; check the connection and try again."));
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const ask = document.getElementById("ask-form");
    if (ask) streamAsk(ask);
    const run = document.getElementById("live");
    if (run) followRun(run);
    const runs = document.getElementById("runs");
    if (runs) followList(runs);
  });
})();
