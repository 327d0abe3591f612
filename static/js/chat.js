// The chat page: one websocket per conversation; answers arrive as "delta" events, a Stop button cancels.
(function () {
  "use strict";
  const root = document.getElementById("chat");
  if (!root) return;
  const turns = document.getElementById("turns");
  const form = document.getElementById("ask");
  const question = document.getElementById("question");
  const model = document.getElementById("model");
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
  const errorBox = document.getElementById("chat-error");
  const csrf = root.querySelector("input[name=csrfmiddlewaretoken]").value;
  let socket = null;
  let current = null;
  let lost = 0;  // the close code that ended access (live.js knows what it means), while one retry is under way

  function turn(role, text, id) {
    const empty = document.getElementById("no-turns");
    if (empty) empty.remove();
    const li = document.createElement("li");
    li.className = "turn " + role;
    if (id) li.dataset.message = id;
    const body = document.createElement("div");
    body.className = "text";
    body.textContent = text;
    li.appendChild(body);
    turns.appendChild(li);
    li.scrollIntoView({ block: "end" });
    return li;
  }

  function busy(on) {
    send.disabled = on;
    stop.hidden = !on;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function addMeta(li, text) {
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.innerHTML = '<span class="muted"></span><span class="feedback"><button type="button" class="small" data-rate="up" aria-label="Good answer">Good</button><button type="button" class="small" data-rate="down" aria-label="Bad answer">Bad</button></span>';
    meta.querySelector(".muted").textContent = text;
    li.appendChild(meta);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(scheme + "://" + location.host + root.dataset.socket);
    let opened = false;
    socket.onopen = function () { opened = true; lost = 0; };
    socket.onmessage = function (message) {
      const event = JSON.parse(message.data);
      if (event.type === "started") {
        current = turn("assistant", "", event.message);
        current.classList.add("status-streaming");
      } else if (event.type === "delta" && current) {
        current.querySelector(".text").textContent += event.text;
        current.scrollIntoView({ block: "end" });
      } else if (event.type === "done" && current) {
        current.classList.remove("status-streaming");
        current.classList.add("status-" + event.status);
        let label = event.model || "";
        if (event.engine === "local-extractive") label += " · offline extractive engine: quotes, not generated text";
        if (event.status === "cancelled") label += " · stopped";
        addMeta(current, label);
        current = null;
        busy(false);
      } else if (event.type === "error") {
        if (current) { current.classList.add("status-error"); addMeta(current, "failed"); current = null; }
        showError(event.error.message);
        busy(false);
      }
    };
    socket.onclose = function (event) {
      busy(false);
      const message = window.crewdeskAccessLost ? window.crewdeskAccessLost(event.code) : "";
      if (message) lost = event.code;
      else if (lost && !opened) {  // the retry was refused too: no more reconnecting, say why
        showError(window.crewdeskAccessLost(lost));
        send.disabled = true;
        return;
      }
      setTimeout(connect, 1500);
    };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const text = question.value.trim();
    if (!text || !socket || socket.readyState !== WebSocket.OPEN) return;
    showError("");
    turn("user", text);
    socket.send(JSON.stringify({ type: "ask", content: text, model: model.value }));
    question.value = "";
    busy(true);
  });
  question.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  stop.addEventListener("click", function () {
    if (socket) socket.send(JSON.stringify({ type: "stop" }));
  });

  turns.addEventListener("click", function (event) {
    const button = event.target.closest("[data-rate]");
    if (!button) return;
    const li = button.closest("[data-message]");
    const comment = button.dataset.rate === "down" ? (window.prompt("What was wrong? (optional)") || "") : "";
    fetch(root.dataset.feedback + li.dataset.message + "/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify({ rating: button.dataset.rate, comment: comment }),
      credentials: "same-origin",
    }).then(function (response) {
      if (!response.ok) { showError("Your feedback could not be saved."); return; }
      li.querySelectorAll("[data-rate]").forEach(function (b) { b.classList.toggle("chosen", b === button); });
    });
  });

  connect();
})();
