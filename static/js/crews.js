// Crews in the browser: starting a run (the crew page) and following one live (the run page), both through
// the same API and websocket as everyone else.
(function () {
  "use strict";

  function csrf() {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (field) return field.value;
    const cookie = document.cookie.split("; ").find(function (c) { return c.startsWith("csrftoken="); });
    return cookie ? cookie.split("=")[1] : "";
  }

  // --- The crew page: start a run ----------------------------------------------------------------------
  const crewPage = document.getElementById("crew");
  const runForm = document.getElementById("run-form");
  if (crewPage && runForm) {
    runForm.addEventListener("submit", function (event) {
      event.preventDefault();
      const inputs = {};
      runForm.querySelectorAll("input[type=text]").forEach(function (input) { inputs[input.name] = input.value; });
      const button = runForm.querySelector("button[type=submit]");
      button.disabled = true;
      fetch("/api/v1/crews/" + crewPage.dataset.crew + "/runs", {
        method: "POST", credentials: "same-origin",
        // One key per page load: a double click or a retried request starts one run, not two.
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf(), "X-Crewdesk-Org": crewPage.dataset.org,
                   "Idempotency-Key": runForm.dataset.idempotencyKey },
        body: JSON.stringify({ inputs: inputs }),
      }).then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      }).then(function (result) {
        if (result.ok) { location.href = crewPage.dataset.runBase.replace(/crews\/$/, "runs/") + result.body.id + "/"; return; }
        button.disabled = false;
        const details = (result.body.error && result.body.error.details) || {};
        const lines = Object.keys(details).map(function (k) { return k + ": " + [].concat(details[k]).join(" "); });
        document.getElementById("run-error").textContent = lines.join(" · ") || result.body.error.message;
      }).catch(function () {
        button.disabled = false;
        document.getElementById("run-error").textContent = "The server could not be reached.";
      });
    });
  }

  // --- The run page: steps, tokens and status as they happen --------------------------------------------
  const runPage = document.getElementById("run");
  if (!runPage) return;
  const data = JSON.parse(document.getElementById("run-data").textContent);
  const stepsList = document.getElementById("steps");
  const typing = document.getElementById("typing");
  const statusPill = document.getElementById("run-status");
  const cancelButton = document.getElementById("cancel-run");
  const finished = ["succeeded", "failed", "cancelled"];
  const labels = { queued: "Queued", running: "Running", succeeded: "Succeeded", failed: "Failed", cancelled: "Cancelled" };
  const kindLabels = { plan: "plan", message: "model", tool_call: "tool call", tool_result: "tool result", output: "output" };
  const seen = new Set();
  const totals = { tokens: 0, cost: 0 };

  function money(value) { return "$" + Number(value).toFixed(8); }  // as the server writes it

  // The header's tokens and cost follow the steps as they come (the tables by agent and task, the output and
  // the steps' Markdown are the server's, brought up to date when the run ends: see refresh()).
  function count(step) {
    if (seen.has(step.seq)) return false;
    seen.add(step.seq);
    totals.tokens += step.prompt_tokens + step.completion_tokens;
    totals.cost += Number(step.cost_usd);
    document.getElementById("run-tokens").textContent = String(totals.tokens);
    document.getElementById("run-cost").textContent = money(totals.cost);
    return true;
  }

  // A live step, as plain text, the way the server lists them (agents/views.py _step_row).
  function addStep(step) {
    if (!count(step)) return;
    typing.hidden = true;
    typing.querySelector(".text").textContent = "";
    const item = document.createElement("li");
    item.className = "step kind-" + step.kind + (step.data && (step.data.error || step.data.ok === false) ? " error" : "");
    item.dataset.seq = step.seq;
    const head = document.createElement("div");
    head.className = "head";
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = kindLabels[step.kind] || step.kind;
    const who = document.createElement("span");
    who.textContent = [step.agent, step.task ? "· " + step.task : ""].join(" ").trim();
    head.append(kind, who);
    if (step.llm_call_id || Number(step.cost_usd) > 0) {
      const cost = document.createElement("span");
      cost.className = "cost";
      cost.textContent = (step.prompt_tokens + step.completion_tokens) + " tokens · " + money(step.cost_usd) +
        (step.latency_ms ? " · " + step.latency_ms + " ms" : "");
      head.appendChild(cost);
    }
    const body = document.createElement("div");
    body.className = "body";
    let text = step.content;
    if (!text && step.data && step.data.tool_calls && step.data.tool_calls.length) text = "→ calls " + step.data.tool_calls.join(", ");
    if (step.data && step.data.cancelled) text = (text ? text + "\n" : "") + "(stopped: cancelled)";
    body.textContent = text || "";
    item.append(head, body);
    stepsList.appendChild(item);
  }

  // The run has ended: the page's server-rendered parts (output and steps as Markdown, the engine, the tables
  // by agent and task, retry and compare) replace the live ones.
  function refresh() {
    fetch(location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        const fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-refresh][id]").forEach(function (old) {
          const next = fresh.getElementById(old.id);
          if (next) old.replaceWith(document.importNode(next, true));
        });
        ["run-tokens", "run-cost"].forEach(function (id) {
          const next = fresh.getElementById(id);
          if (next) document.getElementById(id).textContent = next.textContent;
        });
        runPage.dataset.refreshed = "true";
      });
  }

  function setStatus(status, error) {
    statusPill.dataset.status = status;
    statusPill.textContent = labels[status] || status;
    if (finished.includes(status)) {
      typing.hidden = true;
      if (cancelButton) cancelButton.hidden = true;
      document.getElementById("live-note").textContent = "";
    }
    if (error && error.message) {
      const box = document.getElementById("run-error");
      box.textContent = error.message;
      box.hidden = false;
    }
  }

  (data.steps || []).forEach(count);
  setStatus(data.status, data.error);

  if (cancelButton) {
    cancelButton.addEventListener("click", function () {
      if (!window.confirm("Cancel this run? The work done so far is kept; the rest is not done.")) return;
      cancelButton.disabled = true;
      cancelButton.textContent = "Cancelling…";
      fetch("/api/v1/runs/" + runPage.dataset.run + "/cancel", {
        method: "POST", credentials: "same-origin",
        headers: { "X-CSRFToken": csrf(), "X-Crewdesk-Org": runPage.dataset.org },
      });
    });
  }

  if (finished.includes(data.status)) return;
  document.getElementById("live-note").textContent = "live";
  let done = false;
  window.crewdeskSocket("/ws/runs/" + runPage.dataset.run + "/", {
    maxDelay: 15000,
    reconnect: function () { return !done; },
    onLost: function (message) { document.getElementById("live-note").textContent = message; },
    onEvent: function (event) {
      if (event.type === "step") addStep(event.step);
      else if (event.type === "token") {
        typing.hidden = false;
        typing.querySelector(".who").textContent = (event.agent || "") + (event.task ? " · " + event.task : "") + ":";
        typing.querySelector(".text").textContent += event.text;
      } else if (event.type === "status" || event.type === "run") {
        const status = event.type === "run" ? event.run.status : event.status;
        setStatus(status, event.type === "run" ? event.run.error : event.error);
        if (finished.includes(status) && !done) { done = true; refresh(); }
      }
    },
  });
})();
