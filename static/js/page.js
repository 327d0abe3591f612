// Behaviours every page shares, declared in the markup (no inline scripts or handlers: the CSP refuses them).
//   <form data-confirm="Delete this?">        asks first; Cancel keeps the form from being sent
//   <button data-confirm="Delete this?">      the same, for the one button of a form that does several things
//   window.crewdeskConfirm("Delete this?")    the same question, for scripts that delete with fetch()
//   <span data-fill="42">                     a meter's bar, 42% wide
//   a #fragment naming an element             that element is highlighted (a citation landing on its passage)
//   #menu-toggle / #site-menu                 the navigation as a panel on a phone (Escape or a click outside closes)
//   details.switcher                          the team switcher closes on Escape and on a click outside
//   main table                                scrolls sideways inside its own box, never the page
(function () {
  "use strict";
  document.body.classList.add("js");

  window.crewdeskConfirm = function (question) { return window.confirm(question); };

  // Capture phase: this runs before any other submit listener, which sees defaultPrevented on Cancel.
  document.addEventListener("submit", function (event) {
    const button = event.submitter && event.submitter.closest("[data-confirm]");
    const asker = button || event.target.closest("form[data-confirm]");
    if (asker && !window.crewdeskConfirm(asker.dataset.confirm)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  function fill() {
    document.querySelectorAll("[data-fill]").forEach(function (bar) {
      const percent = Math.max(0, Math.min(100, parseFloat(bar.dataset.fill) || 0));
      bar.style.width = percent + "%";  // the CSSOM, which a style-src policy allows (a style="" would not be)
    });
  }

  function highlight() {
    if (!location.hash) return;
    let id;
    try { id = decodeURIComponent(location.hash.slice(1)); } catch (e) { return; }
    const target = document.getElementById(id);
    if (target) target.classList.add("highlight");
  }

  // A table's box is a named region the keyboard can reach, so a table wider than a phone scrolls with arrows too.
  function wrapTables() {
    document.querySelectorAll("main table").forEach(function (table) {
      let box = table.parentElement.closest(".table-wrap, .scroll-x");
      if (!box) {
        box = document.createElement("div");
        box.className = "table-wrap";
        table.parentNode.insertBefore(box, table);
        box.appendChild(table);
      }
      if (box.hasAttribute("tabindex")) return;
      const caption = table.querySelector("caption");
      const heading = box.closest("section, .card, main").querySelector("h1, h2");
      box.tabIndex = 0;
      box.setAttribute("role", "region");
      box.setAttribute("aria-label", (caption || heading || { textContent: "Table" }).textContent.trim());
    });
  }

  // The navigation panel on a phone.
  const toggle = document.getElementById("menu-toggle");
  const menu = document.getElementById("site-menu");
  function setMenu(open) {
    if (!toggle) return;
    document.body.classList.toggle("menu-open", open);
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  }
  if (toggle && menu) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      const open = toggle.getAttribute("aria-expanded") !== "true";
      setMenu(open);
      if (open) {
        const first = menu.querySelector("a, button");
        if (first) first.focus();
      }
    });
  }

  // Escape and a click outside close the open menu and the team switcher.
  function switchers() { return document.querySelectorAll("details.switcher[open]"); }
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    switchers().forEach(function (details) {
      details.open = false;
      details.querySelector("summary").focus();
    });
    if (toggle && toggle.getAttribute("aria-expanded") === "true") {
      setMenu(false);
      toggle.focus();
    }
  });
  document.addEventListener("click", function (event) {
    switchers().forEach(function (details) { if (!details.contains(event.target)) details.open = false; });
    if (toggle && menu && toggle.getAttribute("aria-expanded") === "true"
        && !menu.contains(event.target) && !toggle.contains(event.target)) setMenu(false);
  });

  fill();
  highlight();
  wrapTables();
  window.addEventListener("hashchange", highlight);
})();
