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
  }

  // A document's state, wherever the page shows it: its row in the table (when the list holds it) and its
  // line in the upload panel (when it was uploaded from this page). Both follow it until it is ready or failed.
  const uploads = {};  // document id -> the upload panel's note
  const states = {};   // document id -> the last status shown

  function apply(doc) {
    const late = doc.status === "queued" || doc.status === "processing";
    if (late && states[doc.id] && !inFlight(states[doc.id])) return;  // an answer that left before it finished
    states[doc.id] = doc.status;
    const reason = doc.failure_reason !== undefined ? doc.failure_reason : doc.reason;
    const row = table.querySelector('tr[data-document="' + doc.id + '"]');
    if (row) {
      setStatus(row, doc.status, doc.progress, reason);
      if (doc.chunk_count !== undefined) row.querySelector(".chunks").textContent = String(doc.chunk_count);
    }
    const note = uploads[doc.id];
    if (note) {
      note.dataset.status = doc.status;
      if (doc.status === "ready") {
        note.textContent = " Ready" + (doc.chunk_count !== undefined ? ": " + doc.chunk_count + " chunks" : "") + ".";
      } else if (doc.status === "failed") {
        note.textContent = " Failed" + (reason ? ": " + reason : "") + ".";
        note.parentElement.classList.add("error");
      } else if (doc.status === "processing") {
        note.textContent = " uploaded, processing " + (doc.progress || 0) + "%…";
      } else {
        note.textContent = " uploaded, waiting to be processed…";
      }
    }
  }

  function inFlight(status) { return status === "queued" || status === "processing"; }

  // Events sent before this page's socket opened (or before an upload was answered) are not replayed: ask the
  // API about a document still in flight until it is finished.
  function watch(id) {
    if (states[id] && !inFlight(states[id])) return;
    const timer = setInterval(function () {
      if (!inFlight(states[id])) { clearInterval(timer); return; }
      refresh(id);
    }, 3000);
    refresh(id);
  }

  function refresh(id) {
    fetch("/api/v1/documents/" + id, { headers: { "X-Crewdesk-Org": orgId }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (doc) { if (doc) apply(doc); });
  }

  function upload(file) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = file.name + " ";
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    const note = document.createElement("span");
    note.className = "muted upload-state";
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
        uploads[body.id] = note;
        const into = select ? select.value : "";
        if (page.dataset.addsRows === "true" && (!page.dataset.collection || page.dataset.collection === into)) {
          addRow(body, select ? select.options[select.selectedIndex].text : "");
        }
        apply(body);
        watch(body.id);  // its events may have come before this page knew of it
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
    apply(event.data);
  });
  table.querySelectorAll("tr[data-document]").forEach(function (row) {
    const id = row.dataset.document;
    states[id] = row.querySelector(".status").dataset.status;
    watch(id);
  });
})();
