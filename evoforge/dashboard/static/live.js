// The live view of a run: draws what the page was served with, then asks for the run's JSON every few seconds
// and redraws, so points appear as rounds finish without reloading the page.
"use strict";
(function () {
  const script = document.currentScript;
  const root = script.dataset.root, pollMs = Number(script.dataset.pollMs);
  const runId = document.getElementById("run-id").textContent;
  let live = JSON.parse(document.getElementById("live-data").textContent);

  function text(id, value) { document.getElementById(id).textContent = value; }

  function number(value) {
    if (value === null || value === undefined) return "–";
    return typeof value === "number" && Number.isFinite(value) ? String(Number(value.toPrecision(6))) : String(value);
  }

  function fillTable(id, rows) {
    const body = document.querySelector("#" + id + " tbody");
    while (body.firstChild) body.removeChild(body.firstChild);
    for (const cells of rows) {
      const row = body.insertRow();
      for (const cell of cells) {
        const td = row.insertCell();
        if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell;
      }
    }
  }

  function link(href, label) {
    const a = document.createElement("a");
    a.href = href; a.textContent = label;
    return a;
  }

  function render() {
    text("run-status", live.run.status);
    text("run-reason", live.run.reason || "");
    text("best-score", live.best ? number(live.best.score) : "–");
    text("best-name", live.best ? live.best.name : "");
    text("node-count", String(live.points.length));
    text("updated", new Date().toLocaleTimeString());
    drawScores(document.getElementById("score-chart"), live, root);
    drawLineage(document.getElementById("lineage"), live, root);
    const lanes = [...new Set(live.points.map(p => p.lane))].sort((a, b) => a - b);
    const legend = document.getElementById("lane-legend");
    legend.textContent = "";
    for (const lane of lanes) {
      const span = document.createElement("span");
      span.style.color = laneColour(lane);
      span.textContent = "● lane " + lane;
      legend.appendChild(span);
    }
    fillTable("funnel", live.funnel.map(f => [f.stage, String(f.count)]));
    fillTable("roles", live.roles.map(r => [r.role, String(r.calls), String(r.tokens_in), String(r.tokens_out),
      Number(r.seconds).toFixed(1)]));
    fillTable("nodes", live.points.slice().reverse().map(p => [String(p.round), String(p.lane),
      link(root + "/nodes/" + encodeURIComponent(p.id), p.name || p.id), p.status, number(p.score)]));
    const banner = document.getElementById("approval-banner");
    banner.textContent = "";
    banner.hidden = !live.approvals.length;
    for (const request of live.approvals) {
      const line = document.createElement("div");
      line.textContent = "Waiting for approval: candidate " + request.candidate + ", stage " + request.stage +
        " (cost " + request.cost + "), lane " + request.lane + " — ";
      line.appendChild(link(root + "/approvals", "answer it"));
      banner.appendChild(line);
    }
  }

  async function poll() {
    try {
      const response = await fetch(root + "/api/runs/" + encodeURIComponent(runId), {cache: "no-store"});
      if (response.ok) { live = await response.json(); render(); }
    } catch (error) {
      text("updated", "no answer from the server (" + error + "); trying again");
    }
    setTimeout(poll, pollMs);
  }

  render();
  setTimeout(poll, pollMs);
})();
