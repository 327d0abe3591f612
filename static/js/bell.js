// The notification bell (templates/accounts/_bell.html): a <details> dropdown that works without JavaScript.
// This adds: the count follows the live socket (live.js re-dispatches every event as "crewdesk:event"; on a
// "notification" the bell's fragment is fetched again, so the count is the server's, never a guess), and the
// dropdown closes on Escape or a click elsewhere.
(function () {
  "use strict";
  const bell = document.getElementById("bell");
  if (!bell) return;
  let pending = null;

  function refresh() {
    if (pending) return pending;
    const url = bell.dataset.refresh + "?next=" + encodeURIComponent(location.pathname + location.search);
    pending = fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        const open = bell.open;
        bell.innerHTML = html;  // our own server's template, escaped by Django
        bell.open = open;
        bell.dispatchEvent(new CustomEvent("bell:updated", { bubbles: true }));
      })
      .catch(function () { /* offline: the next event or page load catches up */ })
      .finally(function () { pending = null; });
    return pending;
  }
  window.crewdeskBellRefresh = refresh;

  document.addEventListener("crewdesk:event", function (event) {
    const type = event.detail && event.detail.type;
    if (type === "notification") refresh();
  });
  document.addEventListener("click", function (event) {
    if (bell.open && !bell.contains(event.target)) bell.open = false;
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && bell.open) {
      bell.open = false;
      bell.querySelector("summary").focus();
    }
  });
})();
