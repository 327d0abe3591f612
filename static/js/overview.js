// The Overview's live parts: the team's activity (and the checklist's ticks) follow the live socket. live.js
// re-dispatches every socket event as "crewdesk:event"; a document that changes state or a notification
// fetches the activity list again (the sentences are written by the server, in one place), at most once a
// second. When a document becomes ready while the checklist is shown, the page's checklist is refreshed too.
(function () {
  "use strict";
  const list = document.getElementById("activity-list");
  if (!list) return;
  let timer = null;
  let checklistStale = false;

  function refresh() {
    timer = null;
    fetch(list.dataset.refresh, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        list.innerHTML = html;  // our server's template, escaped by Django
        list.dispatchEvent(new CustomEvent("activity:updated", { bubbles: true }));
      })
      .catch(function () { /* offline: the next event catches up */ });
    if (checklistStale) refreshChecklist();
  }

  function refreshChecklist() {
    checklistStale = false;
    const checklist = document.getElementById("checklist");
    if (!checklist) return;
    fetch(location.pathname, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("checklist");
        if (fresh) checklist.replaceWith(document.importNode(fresh, true));
        else checklist.remove();  // every step done
        document.querySelectorAll("#checklist [data-fill]").forEach(function (bar) {
          bar.style.width = Math.max(0, Math.min(100, parseFloat(bar.dataset.fill) || 0)) + "%";
        });
      })
      .catch(function () {});
  }

  document.addEventListener("crewdesk:event", function (event) {
    const detail = event.detail || {};
    const data = detail.data || {};
    const interesting = detail.type === "notification" ||
      (detail.type === "document.progress" && (data.status !== "processing" || data.progress === 0));
    if (!interesting) return;
    if (detail.type === "document.progress" && (data.status === "ready" || data.status === "failed")) {
      checklistStale = true;
    }
    if (!timer) timer = setTimeout(refresh, 1000);
  });
})();
