// Copy buttons: <button data-copy="#element-id">: copies the element's text and says so. The clipboard API
// where the page may use it, else (or when it is refused) the selection and execCommand.
document.addEventListener("click", function (event) {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const text = source.value || source.textContent.trim();
  const label = button.textContent;
  const done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = label; }, 2000); };
  const fallback = function () {
    const area = document.createElement("textarea");  // a hidden <pre> cannot be selected; a textarea can
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed"; area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    if (copied) done();
  };
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback);
  else fallback();
});
