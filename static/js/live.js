// The browser's live channel: one websocket per tab (static/js/socket.js reconnects it); events are dispatched
// as "crewdesk:event" on the document for any page script, and land in #live-feed when the page has one.
(function () {
  "use strict";
  const status = document.getElementById("live-status");
  const feed = document.getElementById("live-feed");
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

  window.crewdeskSocket("/ws/notifications/", {
    onOpen: function () { setState("open", "live"); },
    onClose: function () { setState("closed", "reconnecting…"); },
    onLost: function (message) { setState("closed", message); },
    onEvent: function (event) {
      document.dispatchEvent(new CustomEvent("crewdesk:event", { detail: event }));
      if (event.type !== "hello" && event.type !== "pong") show(event);
      // A team deleted by its owner, or one the person was removed from, is gone for them: a tab still on one
      // of its pages leaves it (the owner's own "Delete" form is left to land on its result).
      const here = event.data && location.pathname.indexOf("/o/" + event.data.org + "/") === 0;
      if ((event.type === "org_deleted" || event.type === "org_left") && here && !submitting) {
        location.assign("/");
      }
    },
  });
})();
