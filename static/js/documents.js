// Documents page: drag-and-drop uploads (several files, each with its own progress) through the API, and
// live status of every document from the org's events ("document.progress").
(function () {
  "use strict";
  const page = document.getElementById("documents");
  if (!page) return;
  const orgId = page.dataset.org;
  const base = page.dataset.detailBase;
  const form = document.getElementById("upload-form");
  const input = document.getElementById("upload-input");
  const progressList = document.getElementById("upload-progress");
  const table = document.querySelector("#document-table tbody");
  const labels = { queued: "Queued", processing: "Processing", ready: "Ready", failed: "Failed" };

  function csrf() {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function setStatus(row, status, progress, reason) {
    const cell = row.querySelector(".status");
    cell.dataset.status = status;
    let text = labels[status] || status;
    if (status === "processing") text += " " + progress + "%";
    if (status === "failed" && reason) text += ": " + reason;
    cell.textContent = text;
    cell.title = reason || "";
  }

  function addRow(doc, collectionName) {
    const empty = table.querySelector(".empty-row");
    if (empty) empty.remove();
    const row = document.createElement("tr");
    row.dataset.document = doc.id;
    const link = document.createElement("a");
    link.href = base + doc.id + "/";
    link.textContent = doc.title;
    const cells = [link, collectionName, doc.kind, "", String(doc.chunk_count), "just now"];
    cells.forEach(function (value, index) {
      const cell = document.createElement("td");
      if (value instanceof Node) cell.appendChild(value); else cell.textContent = value;
      if (index === 3) cell.className = "status";
      if (index === 4) cell.className = "chunks";
      if (index === 5) cell.className = "muted";
      row.appendChild(cell);
    });
    table.prepend(row);
    setStatus(row, doc.status, doc.progress, doc.failure_reason);
    watch(row);  // its events may have come before this row existed
  }

  function show(row, doc) {
    const late = doc.status === "queued" || doc.status === "processing";
    if (late && !unfinished(row)) return;  // an answer that left before the document finished
    setStatus(row, doc.status, doc.progress, doc.failure_reason !== undefined ? doc.failure_reason : doc.reason);
    if (doc.chunk_count !== undefined) row.querySelector(".chunks").textContent = String(doc.chunk_count);
  }

  function unfinished(row) {
    const status = row.querySelector(".status").dataset.status;
    return status === "queued" || status === "processing";
  }

  // Events sent before this page's socket opened (or before a row was added) are not replayed: ask the API
  // about a row still in flight until it is finished.
  function watch(row) {
    if (!unfinished(row)) return;
    const timer = setInterval(function () {
      if (!unfinished(row)) { clearInterval(timer); return; }
      refresh(row.dataset.document);
    }, 3000);
    refresh(row.dataset.document);
  }

  function refresh(id) {
    fetch("/api/v1/documents/" + id, { headers: { "X-Crewdesk-Org": orgId }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (doc) {
        const row = doc && table.querySelector('tr[data-document="' + doc.id + '"]');
        if (row) show(row, doc);
      });
  }

  function upload(file) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = file.name + " ";
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    const note = document.createElement("span");
    note.className = "muted";
    item.append(name, bar, note);
    progressList.prepend(item);

    const select = document.getElementById("upload-collection");
    const data = new FormData();
    data.append("file", file);
    if (select && select.value) data.append("collection", select.value);
    const request = new XMLHttpRequest();
    request.open("POST", "/api/v1/documents");
    request.setRequestHeader("X-CSRFToken", csrf());
    request.setRequestHeader("X-Crewdesk-Org", orgId);
    request.upload.onprogress = function (e) { if (e.lengthComputable) bar.value = Math.round(100 * e.loaded / e.total); };
    request.onload = function () {
      let body = {};
      try { body = JSON.parse(request.responseText); } catch (e) { /* not JSON */ }
      if (request.status === 202) {
        bar.value = 100;
        note.textContent = " uploaded, processing…";
        addRow(body, select ? select.options[select.selectedIndex].text : "");
      } else {
        item.classList.add("error");
        note.textContent = " " + ((body.error && body.error.message) || "Upload failed (" + request.status + ").");
      }
    };
    request.onerror = function () { item.classList.add("error"); note.textContent = " Network error: not uploaded."; };
    request.send(data);
  }

  if (form) {
    ["dragenter", "dragover"].forEach(function (type) {
      form.addEventListener(type, function (e) { e.preventDefault(); form.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (type) {
      form.addEventListener(type, function (e) { e.preventDefault(); form.classList.remove("over"); });
    });
    form.addEventListener("drop", function (e) { Array.from(e.dataTransfer.files).forEach(upload); });
    input.addEventListener("change", function () { Array.from(input.files).forEach(upload); input.value = ""; });
  }

  document.addEventListener("crewdesk:event", function (e) {
    const event = e.detail;
    if (!event || event.type !== "document.progress") return;
    const row = table.querySelector('tr[data-document="' + event.data.id + '"]');
    if (row) show(row, event.data);
  });
  table.querySelectorAll("tr[data-document]").forEach(watch);
})();
