// The chat workspace. A conversation page: one websocket (static/js/socket.js); an answer streams in as plain
// text, then its bubble is replaced by the turn the server rendered (Markdown sanitised, citations, actions)
// from the "done" event. No other HTML is ever inserted: everything else is built with textContent. Also: the
// sidebar's rename and pin in place, titles as they are summarised, the collections picker and its "#"
// mentions, Enter to send (Shift+Enter for a line break), regenerate, edit-and-resend, copy buttons on code
// blocks, and a confirm() before deleting.
(function () {
  "use strict";

  function csrf() {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  // Delete asks first (the sidebar's and the page's forms that carry data-confirm).
  document.addEventListener("submit", function (event) {
    const form = event.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  // Rename and pin in place: the sidebar's forms (and the conversation's own) post to the page without
  // JavaScript; here they PATCH /api/v1/conversations/<id> and every place showing the conversation follows.
  function showConversation(body) {
    document.querySelectorAll('[data-conversation="' + body.id + '"]').forEach(function (place) {
      if (place.id === "chat") document.getElementById("chat-title").textContent = body.title;
      place.querySelectorAll(".conv-title").forEach(function (t) { t.textContent = body.title; });
      place.querySelectorAll('form[data-patch="title"] input[name=title]').forEach(function (input) {
        if (document.activeElement !== input) input.value = body.title;
      });
      if (!("pinned" in body)) return;  // a new title only
      place.querySelectorAll('form[data-patch="pinned"]').forEach(function (form) {
        form.querySelector("input[name=pinned]").value = body.pinned ? "0" : "1";
        const button = form.querySelector("button");
        button.textContent = body.pinned ? "Unpin" : "Pin";
        if (button.hasAttribute("aria-pressed")) button.setAttribute("aria-pressed", String(body.pinned));
      });
      if (place.tagName === "LI") {
        place.dataset.pinned = String(body.pinned);
        place.dataset.updated = body.updated_at;
        place.querySelector(".pin").hidden = !body.pinned;
      }
    });
    const list = document.getElementById("conv-list");
    if (!list || !("pinned" in body)) return;
    const rank = function (li) { return (li.dataset.pinned === "true" ? "1" : "0") + (li.dataset.updated || ""); };
    Array.prototype.slice.call(list.querySelectorAll("li[data-conversation]"))
      .sort(function (a, b) { return rank(b) < rank(a) ? -1 : rank(b) > rank(a) ? 1 : 0; })
      .forEach(function (li) { list.appendChild(li); });  // pinned first, then the latest
  }

  document.addEventListener("submit", function (event) {
    const form = event.target.closest("form[data-patch]");
    const owner = form && form.closest("[data-conversation]");
    if (!owner || event.defaultPrevented) return;
    event.preventDefault();
    const field = form.dataset.patch;
    const value = field === "pinned" ? form.querySelector("input[name=pinned]").value === "1"
      : form.querySelector("input[name=title]").value.trim();
    fetch("/api/v1/conversations/" + owner.dataset.conversation, {
      method: "PATCH", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify({ [field]: value }),
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).then(function (result) {
      if (!result.ok) { window.alert((result.body.error && result.body.error.message) || "That did not work."); return; }
      showConversation(result.body);
      const menu = form.closest("details");
      if (menu) { menu.open = false; menu.querySelector("summary").focus(); }
    }).catch(function () { window.alert("The server could not be reached."); });
  });
  // A title summarised from the first exchange (agents.title_conversation pushes it through live.js's socket).
  document.addEventListener("crewdesk:event", function (event) {
    const data = event.detail.data || {};
    if (event.detail.type === "conversation.titled") showConversation({ id: data.conversation, title: data.title });
  });
  document.addEventListener("keydown", function (event) {  // Escape closes an open rename / pin menu
    const menu = event.key === "Escape" && event.target.closest && event.target.closest("details.conv-menu[open], details.rename[open]");
    if (menu) { menu.open = false; menu.querySelector("summary").focus(); }
  });

  // Code blocks in answers get a copy button (copy.js copies the block's text).
  let codeCount = 0;
  function decorate(scope) {
    scope.querySelectorAll(".turn .md pre").forEach(function (pre) {
      if (pre.dataset.copyable) return;
      pre.dataset.copyable = "1";
      if (!pre.id) pre.id = "code-" + (++codeCount);
      const button = document.createElement("button");
      button.type = "button";
      button.className = "small copy-code";
      button.dataset.copy = "#" + pre.id;
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy code");
      pre.parentNode.insertBefore(button, pre);
    });
  }
  decorate(document);

  // The start panel (Chat, Ask): Enter sends there too.
  const startForm = document.getElementById("start-form");
  if (startForm) {
    const first = document.getElementById("question");
    first.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        if (first.value.trim()) startForm.requestSubmit();
      }
    });
  }

  const root = document.getElementById("chat");
  if (!root) return;
  const turns = document.getElementById("turns");
  const form = document.getElementById("ask");
  const question = document.getElementById("question");
  const model = document.getElementById("model");
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
  const errorBox = document.getElementById("chat-error");
  const summary = document.getElementById("picked-summary");
  const mentions = document.getElementById("mentions");
  const boxes = Array.prototype.slice.call(form.querySelectorAll("input[name=collections]"));
  let current = null;
  let asked = null;
  let editing = null;  // the id of the question being edited, replaced when sent
  // A question waiting for the socket: the first one, sent from the start panel, or one asked while away.
  let pending = question.dataset.pending ? { text: question.dataset.pending, replace: null } : null;

  function userTurn(text) {
    const empty = document.getElementById("no-turns");
    if (empty) empty.remove();
    const li = document.createElement("li");
    li.className = "turn user";
    li.dataset.role = "user";
    const body = document.createElement("div");
    body.className = "text plain";
    body.textContent = text;
    li.appendChild(body);
    turns.appendChild(li);
    li.scrollIntoView({ block: "end" });
    return li;
  }

  function answerTurn(id) {
    const li = document.createElement("li");
    li.className = "turn assistant status-streaming";
    li.dataset.message = id;
    li.dataset.role = "assistant";
    const body = document.createElement("div");
    body.className = "text plain";
    li.appendChild(body);
    turns.appendChild(li);
    return li;
  }

  function replaceWithServerHtml(li, html) {
    // `html` is the turn as the server rendered it (agents/chat_turn.html: Markdown sanitised by nh3).
    const template = document.createElement("template");
    template.innerHTML = html;
    const fresh = template.content.firstElementChild;
    if (!fresh) return li;
    li.replaceWith(fresh);
    decorate(fresh);
    return fresh;
  }

  // The conversation's title as "started" gives it (the first question's words; a summary arrives later).
  function showTitle(title) { showConversation({ id: root.dataset.conversation, title: title }); }

  function busy(on) {
    send.disabled = on;
    stop.hidden = !on;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function onEvent(event) {
    if (event.type === "started") {
      if (asked) { asked.dataset.message = event.question; asked = null; }
      if (event.title) showTitle(event.title);
      current = answerTurn(event.message);
    } else if (event.type === "delta" && current) {
      current.querySelector(".text").textContent += event.text;
      current.scrollIntoView({ block: "end" });
    } else if (event.type === "done" && current) {
      current = replaceWithServerHtml(current, event.html);
      current.scrollIntoView({ block: "end" });
      current = null;
      busy(false);
      refreshUserTurns();
    } else if (event.type === "error") {
      if (current && event.html) replaceWithServerHtml(current, event.html);
      else if (asked) {  // refused before it started: the question goes back into the box
        if (!question.value) question.value = asked.querySelector(".text").textContent;
        asked.remove();
      }
      current = null; asked = null;
      showError(event.error.message);
      busy(false);
    }
  }

  // One socket (static/js/socket.js reconnects it); a question asked while it was away is sent on reconnect.
  const live = window.crewdeskSocket(root.dataset.socket, {
    onEvent: onEvent,
    onOpen: function () {
      if (pending) { const waiting = pending; pending = null; ask(waiting.text, waiting.replace); }
    },
    onClose: function () { busy(false); },
    onLost: function (message) {
      if (pending && !question.value) question.value = pending.text;
      showError(message);
      send.disabled = true;
    },
  });

  function refreshUserTurns() {
    // A question sent from this page gets the same actions as a stored one (built as text, not HTML).
    turns.querySelectorAll(".turn.user[data-message]").forEach(function (li) {
      if (li.querySelector(".meta")) return;
      const text = li.querySelector(".text");
      text.id = "raw-" + li.dataset.message;
      const meta = document.createElement("div");
      meta.className = "meta";
      const actions = document.createElement("span");
      actions.className = "actions";
      [["Copy", "copy"], ["Edit", "edit"]].forEach(function (pair) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "small link";
        button.textContent = pair[0];
        if (pair[1] === "copy") button.dataset.copy = "#" + text.id; else button.dataset.edit = "";
        actions.appendChild(button);
      });
      meta.appendChild(actions);
      li.appendChild(meta);
    });
  }

  function removeFrom(li) {
    // The question `li` and everything after it: they are replaced by the new exchange.
    while (li) { const next = li.nextElementSibling; li.remove(); li = next; }
  }

  function ask(text, replace) {
    if (!text || send.disabled) return false;
    if (!live.isOpen()) { pending = { text: text, replace: replace }; live.reconnectNow(); return true; }
    showError("");
    if (replace) removeFrom(turns.querySelector('.turn[data-message="' + replace + '"]'));
    asked = userTurn(text);
    const frame = { type: "ask", content: text, model: model.value };
    if (replace) frame.replace = replace;
    live.send(frame);
    busy(true);
    return true;
  }

  function submit() {
    if (ask(question.value.trim(), editing)) {
      question.value = "";
      editing = null;
      question.placeholder = question.dataset.placeholder || question.placeholder;
    }
  }

  send.addEventListener("click", submit);
  question.addEventListener("keydown", function (event) {
    if (!mentions.hidden && (event.key === "Enter" || event.key === "Tab")) {
      const first = mentions.querySelector("[aria-selected=true]") || mentions.firstElementChild;
      if (first) { event.preventDefault(); pickMention(first.dataset.id); return; }
    }
    if (event.key === "Escape") {
      mentions.hidden = true;
      if (editing) { editing = null; question.value = ""; }
      return;
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); submit(); }
  });
  stop.addEventListener("click", function () {
    live.send({ type: "stop" });
  });

  // --- Collections: the picker and "#" mentions; saved on the conversation through the API ----------------

  function showPicked() {
    const names = boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.dataset.name; });
    summary.textContent = names.length ? "Answering from: " + names.join(", ") : "No collection picked";
  }

  function savePicked() {
    const ids = boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
    return fetch(root.dataset.api, {
      method: "PATCH",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify({ collections: ids }),
      credentials: "same-origin",
    }).then(function (response) {
      if (!response.ok) { showError("The collections could not be saved."); return; }
      showPicked();
    });
  }

  boxes.forEach(function (box) { box.addEventListener("change", savePicked); });
  const save = document.getElementById("collections-save");
  if (save) save.hidden = true;  // saved as they are ticked

  function mentionQuery() {
    const before = question.value.slice(0, question.selectionStart);
    const match = before.match(/(?:^|\s)#([^\s#]*)$/);
    return match ? match[1].toLowerCase() : null;
  }

  function pickMention(id) {
    const box = boxes.find(function (b) { return b.value === id; });
    if (!box) return;
    const at = question.selectionStart;
    const before = question.value.slice(0, at).replace(/#[^\s#]*$/, "");
    question.value = before + question.value.slice(at);
    question.selectionStart = question.selectionEnd = before.length;
    mentions.hidden = true;
    if (!box.checked) { box.checked = true; savePicked(); }
  }

  question.addEventListener("input", function () {
    const wanted = mentionQuery();
    mentions.textContent = "";
    if (wanted === null) { mentions.hidden = true; return; }
    boxes.filter(function (b) { return b.dataset.name.toLowerCase().indexOf(wanted) !== -1; }).forEach(function (b, i) {
      const option = document.createElement("li");
      option.setAttribute("role", "option");
      option.setAttribute("aria-selected", i === 0 ? "true" : "false");
      option.dataset.id = b.value;
      option.textContent = "#" + b.dataset.name + (b.checked ? " (picked)" : "");
      mentions.appendChild(option);
    });
    mentions.hidden = !mentions.firstElementChild;
  });
  mentions.addEventListener("mousedown", function (event) {
    const option = event.target.closest("[data-id]");
    if (option) { event.preventDefault(); pickMention(option.dataset.id); }
  });

  // --- Turn actions: rate, regenerate, edit -----------------------------------------------------------------

  turns.addEventListener("click", function (event) {
    const regenerate = event.target.closest("[data-regenerate]");
    if (regenerate) {
      let previous = regenerate.closest(".turn").previousElementSibling;
      while (previous && previous.dataset.role !== "user") previous = previous.previousElementSibling;
      if (previous && previous.dataset.message) ask(previous.querySelector(".text").textContent, previous.dataset.message);
      return;
    }
    const edit = event.target.closest("[data-edit]");
    if (edit) {
      const li = edit.closest(".turn");
      editing = li.dataset.message;
      question.value = li.querySelector(".text").textContent;
      question.focus();
      showError("");
      return;
    }
    const button = event.target.closest("[data-rate]");
    if (!button) return;
    const li = button.closest("[data-message]");
    const comment = button.dataset.rate === "down" ? (window.prompt("What was wrong? (optional)") || "") : "";
    fetch(root.dataset.feedback + li.dataset.message + "/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify({ rating: button.dataset.rate, comment: comment }),
      credentials: "same-origin",
    }).then(function (response) {
      if (!response.ok) { showError("Your feedback could not be saved."); return; }
      li.querySelectorAll("[data-rate]").forEach(function (b) {
        b.classList.toggle("chosen", b === button);
        b.setAttribute("aria-pressed", b === button ? "true" : "false");
      });
    });
  });

})();
