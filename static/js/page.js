// Behaviours every page shares, declared in the markup (no inline scripts or handlers: the CSP refuses them).
//   <form data-confirm="Delete this?">   asks first; Cancel keeps the form from being sent
//   <span data-fill="42">                a meter's bar, 42% wide
//   a #fragment naming an element        that element is highlighted (a citation landing on its passage)
(function () {
  "use strict";
  // Capture phase: this runs before any other submit listener, which sees defaultPrevented on Cancel.
  document.addEventListener("submit", function (event) {
    const form = event.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
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

  fill();
  highlight();
  window.addEventListener("hashchange", highlight);
})();
