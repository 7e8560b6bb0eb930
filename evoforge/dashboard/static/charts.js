// Plain SVG drawing for the live view: no charting library, so the page needs nothing from the network and
// every label is set as text (never parsed as markup: node names come from a model).
"use strict";
const SVG_NS = "http://www.w3.org/2000/svg";
const LANE_COLOURS = ["#0969da", "#2da44e", "#bf8700", "#8250df", "#cf222e", "#1b7c83", "#bc4c00", "#57606a"];

function svgElement(name, attributes, parent) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes || {})) element.setAttribute(key, value);
  if (parent) parent.appendChild(element);
  return element;
}

function svgText(parent, x, y, text, anchor) {
  const element = svgElement("text", {x: x, y: y, "text-anchor": anchor || "start"}, parent);
  element.textContent = text;
  return element;
}

function laneColour(lane) { return LANE_COLOURS[lane % LANE_COLOURS.length]; }

function clear(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); }

function niceNumber(value) {
  return Math.abs(value) >= 1000 || (Math.abs(value) < 0.01 && value !== 0) ? value.toExponential(2)
    : String(Math.round(value * 1000) / 1000);
}

// A node's link: its point opens its page.
function nodeLink(parent, root, point) {
  const link = svgElement("a", {href: root + "/nodes/" + encodeURIComponent(point.id)}, parent);
  const title = svgElement("title", {}, link);
  title.textContent = point.name + " — round " + point.round + ", lane " + point.lane + ", " + point.status +
    (point.score === null ? "" : ", score " + point.score);
  return link;
}

// Score by round: one point per scored node coloured by lane, a cross at the bottom for a node without a score,
// and the best-so-far step line.
function drawScores(svg, live, root) {
  clear(svg);
  const W = 900, H = 320, left = 60, right = 20, top = 15, bottom = 35;
  const points = live.points;
  const scored = points.filter(p => p.score !== null);
  const rounds = points.map(p => p.round);
  // the axis runs to the planned last round while that is near (the chart fills in as the run goes on), else to
  // the last round seen: a run started with --rounds 100000 and a time budget would squash every point at 0
  const seen = Math.max(1, ...rounds), planned = live.run.rounds || 0;
  const maxRound = planned && planned <= 2 * seen + 10 ? Math.max(seen, planned) : seen;
  let low = Math.min(...scored.map(p => p.score)), high = Math.max(...scored.map(p => p.score));
  if (!scored.length) { low = 0; high = 1; }
  if (low === high) { low -= 0.5; high += 0.5; }
  const pad = (high - low) * 0.08; low -= pad; high += pad;
  const x = r => left + (W - left - right) * r / maxRound;
  const y = s => top + (H - top - bottom) * (1 - (s - low) / (high - low));
  for (let i = 0; i <= 4; i++) {
    const value = low + (high - low) * i / 4;
    svgElement("line", {x1: left, x2: W - right, y1: y(value), y2: y(value), class: "grid"}, svg);
    svgText(svg, left - 6, y(value) + 4, niceNumber(value), "end");
  }
  const step = Math.max(1, Math.ceil(maxRound / 12));
  for (let r = 0; r <= maxRound; r += step) svgText(svg, x(r), H - bottom + 16, String(r), "middle");
  svgText(svg, (left + W - right) / 2, H - 4, "round", "middle");
  svgElement("line", {x1: left, x2: left, y1: top, y2: H - bottom, class: "axis"}, svg);
  svgElement("line", {x1: left, x2: W - right, y1: H - bottom, y2: H - bottom, class: "axis"}, svg);
  if (live.best_so_far.length) {
    const [first, ...rest] = live.best_so_far;
    let path = `M${x(first.round)},${y(first.best)}`;
    for (const b of rest) path += `H${x(b.round)}V${y(b.best)}`;
    path += `H${x(maxRound)}`;
    svgElement("path", {d: path, class: "best"}, svg);
  }
  const lanes = new Set(points.map(p => p.lane));
  const spread = lanes.size > 1 ? 6 : 0;  // lanes side by side within a round
  for (const point of points) {
    const link = nodeLink(svg, root, point);
    const cx = x(point.round) + spread * (point.lane - (lanes.size - 1) / 2);
    if (point.score === null) {
      const cy = H - bottom - 8;
      svgElement("path", {d: `M${cx - 4},${cy - 4}L${cx + 4},${cy + 4}M${cx - 4},${cy + 4}L${cx + 4},${cy - 4}`,
        class: "point failed", "data-node": point.id}, link);
    } else {
      svgElement("circle", {cx: cx, cy: y(point.score), r: point.improving ? 6 : 4.5, fill: laneColour(point.lane),
        "fill-opacity": point.valid ? 0.9 : 0.35, stroke: point.improving ? "#1d2330" : "none",
        class: "point scored", "data-node": point.id}, link);
    }
  }
}

// The lineage tree: x is the round, each node placed in its parent's row order, an edge from parent to child.
function drawLineage(svg, live, root) {
  clear(svg);
  const points = live.points.slice().sort((a, b) => a.round - b.round || a.lane - b.lane);
  const W = 900, left = 30, right = 170, rowHeight = 22;  // right: room for the last round's names
  const byId = new Map(), rows = new Map();
  let next = 0;
  // depth-first order from the roots, so a subtree's nodes sit together
  const children = new Map();
  for (const p of points) {
    const key = p.parent && points.some(q => q.id === p.parent) ? p.parent : null;
    if (!children.has(key)) children.set(key, []);
    children.get(key).push(p);
  }
  const visit = p => { rows.set(p.id, next++); for (const c of children.get(p.id) || []) visit(c); };
  for (const rootNode of children.get(null) || []) visit(rootNode);
  const H = Math.max(120, 30 + rowHeight * next);
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const maxRound = Math.max(1, ...points.map(p => p.round));
  const x = r => left + (W - left - right) * r / maxRound;
  const y = id => 20 + rowHeight * rows.get(id);
  for (const p of points) byId.set(p.id, p);
  for (const p of points) {
    if (p.parent && byId.has(p.parent)) {
      const parent = byId.get(p.parent);
      svgElement("path", {d: `M${x(parent.round)},${y(parent.id)}H${x(p.round) - 10}V${y(p.id)}H${x(p.round)}`,
        class: "edge"}, svg);
    }
  }
  for (const p of points) {
    const link = nodeLink(svg, root, p);
    svgElement("circle", {cx: x(p.round), cy: y(p.id), r: 5, class: "lineage-node", "data-node": p.id,
      fill: p.score === null ? "#fff" : laneColour(p.lane), stroke: p.improving ? "#d1495b" : laneColour(p.lane),
      "stroke-width": p.improving ? 2.5 : 1.5}, link);
    svgText(link, x(p.round) + 8, y(p.id) + 4, p.name + (p.score === null ? " (" + p.status + ")" : ""));
  }
}
