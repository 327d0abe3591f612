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
  const totals = { agents: {}, tasks: {} };

  function money(value) { return "$" + Number(value).toFixed(6); }

  function addToTotals(step) {
    [["agents", step.agent], ["tasks", step.task]].forEach(function (pair) {
      if (!pair[1]) return;
      const row = totals[pair[0]][pair[1]] = totals[pair[0]][pair[1]] || { calls: 0, tokens: 0, cost: 0 };
      if (step.llm_call_id) row.calls += 1;
      row.tokens += step.prompt_tokens + step.completion_tokens;
      row.cost += Number(step.cost_usd);
    });
    const sum = Object.values(totals.agents).reduce(function (a, r) { return [a[0] + r.tokens, a[1] + r.cost]; }, [0, 0]);
    const unassigned = Object.values(totals.tasks).reduce(function (a, r) { return [a[0] + r.tokens, a[1] + r.cost]; }, [0, 0]);
    document.getElementById("run-tokens").textContent = String(Math.max(sum[0], unassigned[0]));
    document.getElementById("run-cost").textContent = money(Math.max(sum[1], unassigned[1]));
  }

  function renderTotals() {
    ["agents", "tasks"].forEach(function (which) {
      const body = document.querySelector((which === "agents" ? "#by-agent" : "#by-task") + " tbody");
      body.innerHTML = "";
      Object.keys(totals[which]).forEach(function (name) {
        const row = totals[which][name];
        const tr = document.createElement("tr");
        [name, String(row.calls), String(row.tokens), money(row.cost)].forEach(function (value) {
          const td = document.createElement("td");
          td.textContent = value;
          tr.appendChild(td);
        });
        body.appendChild(tr);
      });
    });
  }

  function addStep(step) {
    if (seen.has(step.seq)) return;
    seen.add(step.seq);
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
    addToTotals(step);
    renderTotals();
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

  function showOutput() {
    fetch("/api/v1/runs/" + runPage.dataset.run, { credentials: "same-origin", headers: { "X-Crewdesk-Org": runPage.dataset.org } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (run) {
        if (!run) return;
        if (run.output) {
          document.getElementById("run-output").textContent = run.output;
          document.getElementById("run-output-box").hidden = false;
        }
        document.getElementById("run-tokens").textContent = String(run.tokens);
        document.getElementById("run-cost").textContent = "$" + run.cost_usd;
      });
  }

  (data.steps || []).forEach(addStep);
  setStatus(data.status, data.error);

  if (cancelButton) {
    cancelButton.addEventListener("click", function () {
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
  let attempt = 0;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(scheme + "://" + location.host + "/ws/runs/" + runPage.dataset.run + "/");
    let done = false;
    socket.onopen = function () { attempt = 0; };
    socket.onmessage = function (message) {
      const event = JSON.parse(message.data);
      if (event.type === "step") addStep(event.step);
      else if (event.type === "token") {
        typing.hidden = false;
        typing.querySelector(".who").textContent = (event.agent || "") + (event.task ? " · " + event.task : "") + ":";
        typing.querySelector(".text").textContent += event.text;
      } else if (event.type === "status" || event.type === "run") {
        const status = event.type === "run" ? event.run.status : event.status;
        setStatus(status, event.type === "run" ? event.run.error : event.error);
        if (finished.includes(status)) { done = true; showOutput(); }
      }
    };
    socket.onclose = function (event) {
      if (done) return;
      const lost = window.crewdeskAccessLost ? window.crewdeskAccessLost(event.code) : "";
      if (lost) { document.getElementById("live-note").textContent = lost; return; }  // say why; stop reconnecting
      attempt += 1;
      setTimeout(connect, Math.min(15000, 500 * 2 ** attempt));
    };
  }
  connect();
})();
