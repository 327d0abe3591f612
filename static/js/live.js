// The browser's live channel: one websocket per tab, reconnecting with backoff; events land in #live-feed.
// Also the one place that knows what the server's close codes mean (saas/core/consumers.py): a socket closed
// with one of them lost its right, and reconnecting will not bring it back. It is tried once anyway: a password
// change in this browser renews the session's key, and that closes the old sockets with 4401 too.
(function () {
  "use strict";
  const LOST = {
    4401: "You were signed out. Sign in again to continue.",
    4403: "Your role in this team no longer allows this.",
    4404: "You no longer have access to this.",
  };
  window.crewdeskAccessLost = function (code) { return LOST[code] || ""; };

  const status = document.getElementById("live-status");
  const feed = document.getElementById("live-feed");
  let attempt = 0;
  let lost = 0;  // the close code that ended the last socket's access, while one retry is under way
  let submitting = false;  // a form on its way (the owner's own "Delete" click) is left to finish
  document.addEventListener("submit", function (event) { if (!event.defaultPrevented) submitting = true; });

  function setState(state, label) {
    if (!status) return;
    status.dataset.state = state;
    status.textContent = label;
  }

  function show(event) {
    if (!feed) return;
    const empty = feed.querySelector(".empty");
    if (empty) empty.remove();
    const item = document.createElement("li");
    item.textContent = event.type + (event.data && event.data.message ? ": " + event.data.message : "");
    feed.prepend(item);
    while (feed.children.length > 50) feed.lastChild.remove();
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(scheme + "://" + location.host + "/ws/notifications/");
    let opened = false;
    socket.onopen = function () { opened = true; attempt = 0; lost = 0; setState("open", "live"); };
    socket.onmessage = function (message) {
      let event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      document.dispatchEvent(new CustomEvent("crewdesk:event", { detail: event }));
      if (event.type !== "hello" && event.type !== "pong") show(event);
      // A team deleted by its owner, or one the person was removed from, is gone for them: a tab still on one
      // of its pages leaves it (the owner's own "Delete" form is left to land on its result).
      const here = event.data && location.pathname.indexOf("/o/" + event.data.org + "/") === 0;
      if ((event.type === "org_deleted" || event.type === "org_left") && here && !submitting) {
        location.assign("/");
      }
    };
    socket.onclose = function (event) {
      if (LOST[event.code]) lost = event.code;
      else if (lost && !opened) { setState("closed", LOST[lost]); return; }  // the retry was refused: stop here
      setState("closed", "reconnecting…");
      attempt += 1;
      setTimeout(connect, Math.min(30000, 500 * 2 ** attempt));
    };
  }
  connect();
})();
