"""The page at /graph: draws the graph of many hops around an instance with vis-network, served from the
installed pyvis package (no CDN)."""

from __future__ import annotations

from pathlib import Path

import pyvis

# vis-network as pyvis ships it.
VIS_NETWORK_DIR = Path(pyvis.__file__).parent / "lib" / "vis-9.1.2"

GRAPH_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cmdb-asso: graph</title>
<link rel="stylesheet" href="/graph/static/vis-network.css">
<script src="/graph/static/vis-network.min.js"></script>
<style>
  body { font-family: sans-serif; margin: 0; }
  form { padding: 8px; background: #f4f4f4; display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
  #graph { width: 100vw; height: calc(100vh - 115px); }
  #status { padding: 4px 8px; font-size: 13px; color: #444; }
  #legend { padding: 0 8px 4px; font-size: 13px; display: flex; gap: 14px; flex-wrap: wrap; color: #333; }
  #legend .swatch { display: inline-block; width: 12px; height: 12px; border-radius: 6px; margin-right: 4px;
                    vertical-align: -1px; }
</style>
</head>
<body>
<form id="form">
  <label>model <input name="bk_obj_id" value="bk_switch" size="14"></label>
  <label>instance id <input name="bk_inst_id" value="11" size="8"></label>
  <label>depth <select name="depth"><option>1</option><option selected>2</option><option>3</option>
    <option>4</option><option>5</option><option>6</option></select></label>
  <label>direction <select name="direction"><option selected>both</option><option>out</option>
    <option>in</option></select></label>
  <label>user <input name="user" value="admin" size="10"></label>
  <button type="submit">draw</button>
  <a href="/docs">API document</a>
</form>
<div id="status" data-nodes="0" data-edges="0" data-errors="0">-</div>
<div id="legend"></div>
<div id="graph"></div>
<script>
"use strict";
const status = document.getElementById("status");
const form = document.getElementById("form");
let errors = 0;
function fail(text) {
  errors += 1;
  status.dataset.errors = String(errors);
  status.textContent = text;
}
window.addEventListener("error", (event) => fail("error: " + event.message));
const palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                 "#9c755f", "#bab0ac"];
// A model's colour follows from its id alone: the same in every view, whatever else the graph holds.
function colourOf(model) {
  let hash = 0;
  for (const character of model) hash = (hash * 31 + character.codePointAt(0)) >>> 0;
  return palette[hash % palette.length];
}
const plural = (count, one, many) => count + " " + (count === 1 ? one : many);
function showLegend(graph) {
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  const models = [...new Set(graph.nodes.map((node) => node.bk_obj_id))].sort();
  for (const model of models) {
    const item = document.createElement("span");
    item.className = "model";
    item.dataset.model = model;
    item.dataset.colour = colourOf(model);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colourOf(model);
    item.append(swatch, model);
    legend.append(item);
  }
  if (models.length) {
    const note = document.createElement("span");
    note.textContent = "thick border: the instance drawn around; arrows: source to target, labelled by kind";
    legend.append(note);
  }
}
const key = (end) => end.bk_obj_id + ":" + end.bk_inst_id;
let network = null;
async function draw() {
  const values = new FormData(form);
  const params = new URLSearchParams();
  for (const name of ["bk_obj_id", "bk_inst_id", "depth", "direction", "user"]) params.set(name, values.get(name));
  history.replaceState(null, "", "?" + params.toString());
  const body = {
    bk_obj_id: values.get("bk_obj_id"),
    bk_inst_id: Number(values.get("bk_inst_id")),
    depth: Number(values.get("depth")),
    direction: values.get("direction"),
  };
  status.textContent = "loading";
  const response = await fetch("/api/v3/find/instassociation/graph", {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-Bkcmdb-User": values.get("user")},
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!answer.result) {
    status.dataset.nodes = "0";
    status.dataset.edges = "0";
    status.textContent = "refused: " + answer.bk_error_code + " " + answer.bk_error_msg;
    showLegend({nodes: []});
    if (network) network.setData({nodes: [], edges: []});
    return;
  }
  const graph = answer.data;
  const nodes = new vis.DataSet(graph.nodes.map((node) => ({
    id: key(node),
    label: (node.bk_inst_name || String(node.bk_inst_id)) + "\\n" + node.bk_obj_id,
    color: colourOf(node.bk_obj_id),
    font: {color: "#222"},
    borderWidth: node.hop === 0 ? 4 : 1,
    model: node.bk_obj_id,
    inst: node.bk_inst_id,
  })));
  const edges = new vis.DataSet(graph.edges.map((edge) => ({
    id: edge.id, from: key(edge.from), to: key(edge.to), label: edge.bk_asst_id, arrows: "to",
    title: edge.bk_obj_asst_id + " (link " + edge.id + ")", length: 180,
    font: {size: 12, background: "rgba(255,255,255,0.85)", strokeWidth: 0, align: "middle"},
  })));
  const data = {nodes, edges};
  if (network) {
    network.setData(data);
  } else {
    network = new vis.Network(document.getElementById("graph"), data, {
      physics: {stabilization: true, barnesHut: {springLength: 180, avoidOverlap: 0.3}},
    });
    network.on("click", (event) => {
      if (event.nodes.length !== 1) return;
      const node = nodes.get(event.nodes[0]);
      form.elements.bk_obj_id.value = node.model;
      form.elements.bk_inst_id.value = String(node.inst);
      draw().catch((error) => fail("error: " + error));
    });
  }
  status.dataset.nodes = String(graph.nodes.length);
  status.dataset.edges = String(graph.edges.length);
  showLegend(graph);
  status.textContent = plural(graph.nodes.length, "instance", "instances") + ", " +
    plural(graph.edges.length, "link", "links") +
    (graph.truncated ? " (cut at the bound)" : "") + (graph.hidden ? ", " + graph.hidden + " not shown" : "");
}
form.addEventListener("submit", (event) => {
  event.preventDefault();
  draw().catch((error) => fail("error: " + error));
});
const asked = new URLSearchParams(location.search);
for (const [name, value] of asked) if (form.elements[name]) form.elements[name].value = value;
draw().catch((error) => fail("error: " + error));
</script>
</body>
</html>
"""
