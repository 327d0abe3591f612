// The crew builder: agents and tasks added, edited, reordered and removed in the page, then saved whole
// through the API (POST /api/v1/crews or PUT /api/v1/crews/<id>); the API's errors are shown by field.
(function () {
  "use strict";
  const form = document.getElementById("builder");
  if (!form) return;
  const orgId = form.dataset.org;
  const crewId = form.dataset.crew;
  const agentsBox = document.getElementById("agents");
  const tasksBox = document.getElementById("tasks");
  const errors = document.getElementById("builder-errors");
  const spec = JSON.parse(document.getElementById("crew-spec").textContent);

  function field(name) { return form.querySelector('[data-field="' + name + '"]'); }

  function moveButtons(item, box, onChange) {
    item.querySelector(".up").addEventListener("click", function () {
      if (item.previousElementSibling) box.insertBefore(item, item.previousElementSibling);
      onChange();
    });
    item.querySelector(".down").addEventListener("click", function () {
      if (item.nextElementSibling) box.insertBefore(item.nextElementSibling, item);
      onChange();
    });
    item.querySelector(".remove").addEventListener("click", function () { item.remove(); onChange(); });
  }

  function addAgent(agent) {
    const item = document.getElementById("agent-template").content.firstElementChild.cloneNode(true);
    item.querySelector(".role").value = agent.role || "";
    item.querySelector(".goal").value = agent.goal || "";
    item.querySelector(".instructions").value = agent.instructions || "";
    item.querySelector(".model").value = agent.model || "";
    item.querySelector(".max-iterations").value = agent.max_iterations || 5;
    item.querySelectorAll(".tool").forEach(function (box) { box.checked = (agent.tools || []).includes(box.value); });
    item.querySelector(".role").addEventListener("input", refreshTasks);
    moveButtons(item, agentsBox, refreshAll);
    agentsBox.appendChild(item);
    refreshAll();
  }

  function addTask(task) {
    const item = document.getElementById("task-template").content.firstElementChild.cloneNode(true);
    item.querySelector(".name").value = task.name || "";
    item.querySelector(".description").value = task.description || "";
    item.querySelector(".expected-output").value = task.expected_output || "";
    item.querySelector(".output-format").value = task.output_format || "text";
    item.querySelector(".output-schema").value = task.output_schema ? JSON.stringify(task.output_schema, null, 2) : "";
    item.dataset.agent = task.agent || "";
    item.dataset.context = JSON.stringify(task.context || []);
    item.querySelector(".name").addEventListener("input", refreshTasks);
    item.querySelector(".description").addEventListener("input", refreshScheduleInputs);
    item.querySelector(".expected-output").addEventListener("input", refreshScheduleInputs);
    item.querySelector(".output-format").addEventListener("change", refreshTasks);
    item.querySelector(".agent").addEventListener("change", function (e) { item.dataset.agent = e.target.value; });
    moveButtons(item, tasksBox, refreshAll);
    tasksBox.appendChild(item);
    refreshAll();
  }

  function roles() {
    return Array.from(agentsBox.querySelectorAll(".role")).map(function (i) { return i.value.trim(); }).filter(Boolean);
  }

  // Each task's agent list follows the agents; its context choices are the tasks before it.
  function refreshTasks() {
    const hierarchical = field("process").value === "hierarchical";
    const earlier = [];
    tasksBox.querySelectorAll(".task").forEach(function (item, index) {
      item.querySelector("legend").textContent = "Task " + (index + 1);
      const select = item.querySelector(".agent");
      select.innerHTML = "";
      const none = document.createElement("option");
      none.value = "";
      none.textContent = hierarchical ? "The manager chooses" : "Choose an agent";
      select.appendChild(none);
      roles().forEach(function (role) {
        const option = document.createElement("option");
        option.value = option.textContent = role;
        select.appendChild(option);
      });
      select.value = roles().includes(item.dataset.agent) ? item.dataset.agent : "";
      const chosen = JSON.parse(item.dataset.context || "[]");
      const box = item.querySelector(".context");
      box.innerHTML = earlier.length ? "" : '<span class="muted">Nothing: this is the first task.</span>';
      earlier.forEach(function (name) {
        const label = document.createElement("label");
        const check = document.createElement("input");
        check.type = "checkbox";
        check.value = name;
        check.checked = chosen.includes(name);
        check.addEventListener("change", function () {
          item.dataset.context = JSON.stringify(Array.from(box.querySelectorAll("input:checked")).map(function (c) { return c.value; }));
        });
        label.appendChild(check);
        label.append(" " + name);
        box.appendChild(label);
      });
      item.querySelector(".schema-box").hidden = item.querySelector(".output-format").value !== "json";
      const name = item.querySelector(".name").value.trim();
      if (name) earlier.push(name);
    });
    refreshScheduleInputs();
  }

  // The schedule's inputs: one field per placeholder of the tasks, in order, shown when there is a schedule;
  // what was typed is kept while placeholders come and go.
  const scheduleBox = document.getElementById("schedule-inputs");
  const scheduleFields = document.getElementById("schedule-input-fields");
  const scheduleValues = Object.assign({}, (spec.schedule && spec.schedule.inputs) || {});

  function placeholders() {
    const names = [];
    tasksBox.querySelectorAll(".task").forEach(function (item) {
      [".description", ".expected-output"].forEach(function (selector) {
        const text = item.querySelector(selector).value.replace(/\{\{|\}\}/g, "");
        const pattern = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
        let match;
        while ((match = pattern.exec(text))) if (!names.includes(match[1])) names.push(match[1]);
      });
    });
    return names;
  }

  function refreshScheduleInputs() {
    const names = placeholders();
    const scheduled = field("schedule.enabled").checked || field("schedule.cron").value.trim() !== "";
    scheduleBox.hidden = !(scheduled && names.length);
    const current = Array.from(scheduleFields.querySelectorAll("input")).map(function (i) { return i.dataset.input; });
    if (current.join(",") === names.join(",")) return;
    scheduleFields.innerHTML = "";
    names.forEach(function (name) {
      const wrap = document.createElement("p");
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "text";
      input.id = "schedule-input-" + name;
      input.dataset.input = name;
      input.dataset.field = "schedule.inputs." + name;
      input.maxLength = 10000;
      input.value = scheduleValues[name] !== undefined ? String(scheduleValues[name]) : "";
      input.addEventListener("input", function () { scheduleValues[name] = input.value; });
      label.htmlFor = input.id;
      label.textContent = name;
      wrap.append(label, input);
      scheduleFields.appendChild(wrap);
    });
  }

  function scheduleInputs() {
    const inputs = {};
    scheduleFields.querySelectorAll("input").forEach(function (input) { inputs[input.dataset.input] = input.value; });
    return inputs;
  }

  function refreshAll() {
    agentsBox.querySelectorAll(".agent").forEach(function (item, index) {
      item.querySelector("legend").textContent = "Agent " + (index + 1);
    });
    refreshTasks();
  }

  function collect() {
    const budget = field("budget_usd").value.trim();
    const data = {
      name: field("name").value.trim(),
      description: field("description").value.trim(),
      process: field("process").value,
      default_model: field("default_model").value,
      budget_usd: budget === "" ? null : budget,
      schedule: { cron: field("schedule.cron").value.trim(), enabled: field("schedule.enabled").checked,
                  inputs: scheduleInputs() },
      agents: Array.from(agentsBox.querySelectorAll(".agent")).map(function (item) {
        return {
          role: item.querySelector(".role").value.trim(),
          goal: item.querySelector(".goal").value.trim(),
          instructions: item.querySelector(".instructions").value.trim(),
          model: item.querySelector(".model").value,
          tools: Array.from(item.querySelectorAll(".tool:checked")).map(function (c) { return c.value; }),
          max_iterations: parseInt(item.querySelector(".max-iterations").value, 10) || 5,
        };
      }),
      tasks: Array.from(tasksBox.querySelectorAll(".task")).map(function (item) {
        const format = item.querySelector(".output-format").value;
        let schema = null;
        if (format === "json") {
          try { schema = JSON.parse(item.querySelector(".output-schema").value || "null"); }
          catch (e) { schema = "not JSON"; }
        }
        return {
          name: item.querySelector(".name").value.trim(),
          agent: item.querySelector(".agent").value,
          description: item.querySelector(".description").value.trim(),
          expected_output: item.querySelector(".expected-output").value.trim(),
          context: JSON.parse(item.dataset.context || "[]"),
          output_format: format,
          output_schema: schema,
        };
      }),
    };
    return data;
  }

  // "agents[1].role" -> the input to mark; the message is listed at the top either way.
  function mark(path) {
    const match = /^(agents|tasks)\[(\d+)\]\.?([a-z_]*)/.exec(path);
    let target = null;
    if (match) {
      const item = (match[1] === "agents" ? agentsBox.querySelectorAll(".agent") : tasksBox.querySelectorAll(".task"))[+match[2]];
      const names = { role: ".role", goal: ".goal", model: ".model", tools: ".checks", agent: ".agent", name: ".name",
        description: ".description", context: ".context", output_schema: ".output-schema", expected_output: ".expected-output" };
      target = item && (item.querySelector(names[match[3]] || "input") || item);
    } else {
      target = field(path.replace(/\.$/, ""));
    }
    if (target) target.classList.add("invalid");
  }

  function showErrors(error) {
    form.querySelectorAll(".invalid").forEach(function (el) { el.classList.remove("invalid"); });
    errors.innerHTML = "";
    const list = document.createElement("ul");
    const details = (error && error.details) || {};
    const flat = [];
    (function walk(prefix, value) {
      if (Array.isArray(value) && value.every(function (v) { return typeof v === "string"; })) {
        flat.push([prefix, value.join(" ")]);
      } else if (Array.isArray(value)) {
        value.forEach(function (v, i) { if (v && Object.keys(v).length) walk(prefix + "[" + i + "]", v); });
      } else if (value && typeof value === "object") {
        Object.keys(value).forEach(function (k) {  // list errors may come keyed by index: agents.2 -> agents[2]
          walk(/^\d+$/.test(k) ? prefix + "[" + k + "]" : (prefix ? prefix + "." + k : k), value[k]);
        });
      }
    })("", details.fields || details);
    if (!flat.length) flat.push(["", (error && error.message) || "Could not save the crew."]);
    flat.forEach(function (pair) {
      const item = document.createElement("li");
      // "agents[2].role" reads as "Agent 3, role"
      const where = pair[0].replace(/(agents|tasks)\[(\d+)\]\.?/g, function (m, list, index) {
        return (list === "agents" ? "Agent " : "Task ") + (Number(index) + 1) + ", ";
      }).replace(/, $/, "").replace(/^schedule\.inputs\.(\w+)$/, "Schedule input {$1}");
      item.textContent = (where ? where + ": " : "") + pair[1];
      list.appendChild(item);
      if (pair[0]) mark(pair[0]);
    });
    errors.appendChild(list);
    errors.scrollIntoView({ block: "center" });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const button = document.getElementById("save-crew");
    button.disabled = true;
    fetch("/api/v1/crews" + (crewId ? "/" + crewId : ""), {
      method: crewId ? "PUT" : "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": form.querySelector("[name=csrfmiddlewaretoken]").value,
                 "X-Crewdesk-Org": orgId },
      body: JSON.stringify(collect()),
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).then(function (result) {
      button.disabled = false;
      if (result.ok) { location.href = form.dataset.crewsBase + result.body.id + "/"; return; }
      showErrors(result.body.error);
    }).catch(function () {
      button.disabled = false;
      showErrors({ message: "The server could not be reached; nothing was saved." });
    });
  });

  field("name").value = spec.name || "";
  field("description").value = spec.description || "";
  field("process").value = spec.process || "sequential";
  field("default_model").value = spec.default_model || "auto";
  field("budget_usd").value = spec.budget_usd || "";
  field("schedule.cron").value = (spec.schedule && spec.schedule.cron) || "";
  field("schedule.enabled").checked = !!(spec.schedule && spec.schedule.enabled);
  field("process").addEventListener("change", refreshTasks);
  field("schedule.enabled").addEventListener("change", refreshScheduleInputs);
  field("schedule.cron").addEventListener("input", refreshScheduleInputs);
  (spec.agents || []).forEach(addAgent);
  (spec.tasks || []).forEach(addTask);
  document.getElementById("add-agent").addEventListener("click", function () { addAgent({ tools: [] }); });
  document.getElementById("add-task").addEventListener("click", function () { addTask({}); });
})();
