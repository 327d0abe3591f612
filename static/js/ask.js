// Ask page: the answer streams in (server-sent events from /api/v1/ask), then its citations appear, each
// linking to the cited passage on its document's page. Stop aborts the request, which cancels the model call.
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
  let controller = null;
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
      item.append(link, quote);
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

  async function ask(event) {
    event.preventDefault();
    errorBox.hidden = true;
    result.hidden = false;
    answer.textContent = "";
    meta.textContent = "";
    citations.textContent = "";
    unsupported.textContent = "";
    feedback.hidden = true;
    responseId = null;
    controller = new AbortController();
    submit.disabled = true;
    stop.hidden = false;
    const body = { question: question.value, stream: true };
    if (collection.value) body.collection = collection.value;
    try {
      const response = await fetch("/api/v1/ask", {
        method: "POST", credentials: "same-origin", signal: controller.signal,
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf(), "X-Crewdesk-Org": page.dataset.org },
        body: JSON.stringify(body),
      });
      if (!response.ok) {
        let message = "The question could not be answered (" + response.status + ").";
        try { const data = await response.json(); if (data.error) message = data.error.message; } catch (e) { /* keep */ }
        showError(message);
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const line = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          if (!line.startsWith("data: ")) continue;
          const event = JSON.parse(line.slice(6));
          if (event.type === "delta") answer.appendChild(document.createTextNode(event.text));
          else if (event.type === "done") renderDone(event);
          else if (event.type === "error") showError(event.error.message);
        }
      }
    } catch (e) {
      if (e.name !== "AbortError") showError("The connection was lost before the answer finished.");
      else meta.textContent = "Stopped.";
    } finally {
      submit.disabled = false;
      stop.hidden = true;
      controller = null;
    }
  }

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
  stop.addEventListener("click", function () { if (controller) controller.abort(); });
})();
