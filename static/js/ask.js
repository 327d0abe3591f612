// Ask page: the answer streams in over a websocket, then its citations appear, each linking to the cited
// passage on its document's page. Stop ends the answer and cancels the model call.
(function () {
  "use strict";
  const page = document.getElementById("ask");
  if (!page) return;
  const base = page.dataset.detailBase;
  const form = document.getElementById("ask-form");
  const question = document.getElementById("ask-question");
  const collection = document.getElementById("ask-collection");
  const submit = document.getElementById("ask-submit");
  const stop = document.getElementById("ask-stop");
  const result = document.getElementById("ask-result");
  const answer = document.getElementById("ask-answer");
  const meta = document.getElementById("ask-meta");
  const citations = document.getElementById("ask-citations");
  const unsupported = document.getElementById("ask-unsupported");
  const errorBox = document.getElementById("ask-error");
  const feedback = document.getElementById("ask-feedback");
  let responseId = null;

  function csrf() {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function renderAnswer(text, cited) {
    // Markers become links to their citation; everything else stays text.
    answer.textContent = "";
    const known = new Set(cited.map(function (c) { return String(c.marker); }));
    text.split(/(\[\d{1,3}\])/).forEach(function (part) {
      const marker = part.match(/^\[(\d{1,3})\]$/);
      if (marker && known.has(marker[1])) {
        const link = document.createElement("a");
        link.href = "#cite-" + marker[1];
        link.className = "marker";
        link.textContent = part;
        answer.appendChild(link);
      } else {
        answer.appendChild(document.createTextNode(part));
      }
    });
  }

  function renderDone(done) {
    renderAnswer(done.answer, done.citations);
    responseId = done.id;
    feedback.hidden = !done.id;
    feedback.querySelectorAll("[data-rate]").forEach(function (b) { b.classList.remove("chosen"); });
    citations.textContent = "";
    done.citations.forEach(function (c) {
      const item = document.createElement("li");
      item.id = "cite-" + c.marker;
      item.value = c.marker;
      const link = document.createElement("a");
      link.href = base + c.document_id + "/#chunk-" + c.chunk_id;
      link.textContent = c.title + (c.page ? ", page " + c.page : "") + (c.heading ? " · " + c.heading : "");
      const quote = document.createElement("blockquote");
      quote.textContent = c.quote;
      item.append(link);
      if (c.flagged) {
        // The guardrails found instruction-like text in this passage: the model saw it quoted as data only.
        const flag = document.createElement("span");
        flag.className = "badge badge-warn";
        flag.title = "This passage contains text that looks like instructions to an AI. It was given to the model as quoted data, not as instructions.";
        flag.textContent = "Flagged";
        item.append(" ", flag);
      }
      item.append(quote);
      citations.appendChild(item);
    });
    const parts = [];
    if (done.engine === "local-extractive") parts.push("Offline extractive engine: quotes from your documents, not generated text");
    else if (done.model) parts.push("Model " + done.model);
    if (done.groundedness !== null && done.groundedness !== undefined) parts.push("grounded " + Math.round(done.groundedness * 100) + "%");
    if (done.cached) parts.push("from cache");
    meta.textContent = parts.join(" · ");
    unsupported.textContent = done.unsupported && done.unsupported.length
      ? "Not supported by the cited passages: " + done.unsupported.join(" ") : "";
  }

  // The answer travels over a websocket of this page (/ws/ask/<org>/): deltas, then "done" with citations.
  let socket = null;
  let pending = null;
  let lost = 0;  // the close code that ended access (live.js knows what it means)

  function finish() {
    submit.disabled = false;
    stop.hidden = true;
  }

  function onEvent(event) {
    if (event.type === "delta") answer.appendChild(document.createTextNode(event.text));
    else if (event.type === "done") { renderDone(event); finish(); }
    else if (event.type === "stopped") { meta.textContent = "Stopped."; finish(); }
    else if (event.type === "error") { showError(event.error.message); finish(); }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(scheme + "://" + location.host + "/ws/ask/" + page.dataset.org + "/");
    let opened = false;
    socket.onopen = function () { opened = true; lost = 0; if (pending) { socket.send(pending); pending = null; } };
    socket.onmessage = function (message) {
      try { onEvent(JSON.parse(message.data)); } catch (e) { /* not ours */ }
    };
    socket.onclose = function (event) {
      const message = window.crewdeskAccessLost ? window.crewdeskAccessLost(event.code) : "";
      if (message) lost = event.code;
      if (message || (lost && !opened)) {  // the next ask tries once more (a renewed session), then says why
        pending = null;
        showError(window.crewdeskAccessLost(lost));
        finish();
        return;
      }
      if (!submit.disabled) return;
      showError("The connection was lost before the answer finished.");
      finish();
    };
  }

  function ask(event) {
    event.preventDefault();
    errorBox.hidden = true;
    result.hidden = false;
    answer.textContent = "";
    meta.textContent = "";
    citations.textContent = "";
    unsupported.textContent = "";
    feedback.hidden = true;
    responseId = null;
    submit.disabled = true;
    stop.hidden = false;
    const body = { type: "ask", question: question.value };
    if (collection.value) body.collection = collection.value;
    const frame = JSON.stringify(body);
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(frame);
    else { pending = frame; if (!socket || socket.readyState > WebSocket.OPEN) connect(); }
  }

  connect();
  stop.addEventListener("click", function () {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "stop" }));
  });
  feedback.addEventListener("click", function (event) {
    const button = event.target.closest("[data-rate]");
    if (!button || !responseId) return;
    const comment = button.dataset.rate === "down" ? (window.prompt("What was wrong? (optional)") || "") : "";
    fetch("/api/v1/responses/" + responseId + "/feedback", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf(), "X-Crewdesk-Org": page.dataset.org },
      body: JSON.stringify({ rating: button.dataset.rate, comment: comment }),
    }).then(function (response) {
      if (response.ok) feedback.querySelectorAll("[data-rate]").forEach(function (b) { b.classList.toggle("chosen", b === button); });
      else showError("The rating was not saved (" + response.status + ").");
    });
  });

  form.addEventListener("submit", ask);
})();
