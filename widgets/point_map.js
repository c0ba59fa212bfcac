// The point map (widgets/point_map.py): every point drawn into one ImageData, a grid index for the point under
// the pointer, a lasso or a click sent to Python as the "selection" state, the pointer's resting point as "hover".
// The payload is widgets/point_map.py's `payload` bytes: u32 header length, JSON header, float32 xy (n, 2),
// uint16 codes (n), then the view's JSON: {hover: {column, uri} or {}, lasso: the selection's polygon or null}.
const HOVER_PX = 8;   // a point is under the pointer within this many CSS pixels
const REST_MS = 120;  // the pointer rests this long on a point before Python is asked for its image

function parse(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = view.getUint32(0, true);
  const decoder = new TextDecoder();
  const header = JSON.parse(decoder.decode(bytes.subarray(4, 4 + length)));
  const start = bytes.byteOffset + 4 + length, n = header.n;  // the header is padded to a multiple of 4 bytes
  const xyEnd = start + 8 * n, codesEnd = xyEnd + 2 * n;
  const extra = JSON.parse(decoder.decode(bytes.subarray(codesEnd - bytes.byteOffset)));
  return {header, hover: extra.hover, lasso: extra.lasso,
          xy: new Float32Array(bytes.buffer.slice(start, xyEnd)), codes: new Uint16Array(bytes.buffer.slice(xyEnd, codesEnd))};
}

function rgba(hex) {  // "#rrggbb" as the little-endian uint32 of an ImageData pixel
  const v = parseInt(hex.slice(1), 16);
  return (0xff << 24 | (v & 0xff) << 16 | (v >> 8 & 0xff) << 8 | v >> 16) >>> 0;
}

function setup(root) {
  const el = (tag, cls, parent) => { const e = document.createElement(tag); if (cls) e.className = cls; (parent || root).appendChild(e); return e; };
  const box = el("div", "pm-box"), bar = el("div", "pm-bar", box);
  const buttons = {};
  for (const [mode, label] of [["lasso", "Lasso"], ["pan", "Pan"]]) {
    buttons[mode] = el("button", "pm-button", bar);
    buttons[mode].textContent = label;
    buttons[mode].onclick = () => { m.mode = mode; for (const b in buttons) buttons[b].classList.toggle("pm-on", b === mode); };
  }
  const reset = el("button", "pm-button", bar);
  reset.textContent = "Reset view";
  const stage = el("div", "pm-stage", box), points = el("canvas", "pm-points", stage), marks = el("canvas", "pm-marks", stage);
  const tip = el("div", "pm-tip", stage), legend = el("div", "pm-legend", box);
  const tipText = el("div", "", tip), tipImage = el("img", "", tip);
  const m = {mode: "lasso", view: null, selection: null, hovered: -1, sent: -1, data: null, version: null};
  buttons.lasso.classList.add("pm-on");

  const toData = (px, py) => [m.view[0] + px / m.sx, m.view[3] - py / m.sy];
  const toScreen = (x, y) => [(x - m.view[0]) * m.sx, (m.view[3] - y) * m.sy];

  m.draw = () => {
    const {xy, codes, header} = m.data, ratio = window.devicePixelRatio || 1;
    const width = stage.clientWidth, height = header.height;
    for (const c of [points, marks]) { c.width = Math.round(width * ratio); c.height = Math.round(height * ratio);
      c.style.width = width + "px"; c.style.height = height + "px"; }
    m.sx = width / (m.view[1] - m.view[0]); m.sy = height / (m.view[3] - m.view[2]);
    const W = points.width, H = points.height, ctx = points.getContext("2d"), image = ctx.createImageData(W, H);
    const pixels = new Uint32Array(image.data.buffer), colours = header.colours.map(rgba), size = Math.max(1, Math.round(header.size * ratio));
    pixels.fill(0xffffffff);
    // The grid index (cells of HOVER_PX, CSS pixels): points sorted by cell, so the pointer looks at 9 cells only.
    const cw = Math.ceil(width / HOVER_PX) + 1, ch = Math.ceil(height / HOVER_PX) + 1, cell = new Int32Array(header.n);
    const counts = new Int32Array(cw * ch + 1);
    for (let i = 0; i < header.n; i++) {
      const [px, py] = toScreen(xy[2 * i], xy[2 * i + 1]);
      if (px < 0 || py < 0 || px >= width || py >= height) { cell[i] = -1; continue; }
      cell[i] = Math.floor(py / HOVER_PX) * cw + Math.floor(px / HOVER_PX); counts[cell[i] + 1]++;
      const x0 = Math.round(px * ratio - size / 2), y0 = Math.round(py * ratio - size / 2), colour = colours[codes[i]];
      for (let y = Math.max(0, y0); y < Math.min(H, y0 + size); y++)
        for (let x = Math.max(0, x0); x < Math.min(W, x0 + size); x++) pixels[y * W + x] = colour;
    }
    ctx.putImageData(image, 0, 0);
    for (let c = 0; c < cw * ch; c++) counts[c + 1] += counts[c];
    const order = new Int32Array(counts[cw * ch]), fill = counts.slice(0, cw * ch);
    for (let i = 0; i < header.n; i++) if (cell[i] >= 0) order[fill[cell[i]]++] = i;
    m.grid = {cw, ch, counts, order};
    m.drawMarks();
    root.host && root.host.setAttribute("data-drawn", String(header.n));
  };

  m.drawMarks = () => {  // the lasso being drawn or the selection's, and the hovered point, on the top canvas
    const ctx = marks.getContext("2d"), ratio = window.devicePixelRatio || 1;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, marks.width, marks.height);
    const path = m.drawing || (m.selection || []).map(([x, y]) => toScreen(x, y));
    if (path.length > 1) {
      ctx.beginPath(); ctx.moveTo(...path[0]); for (const p of path) ctx.lineTo(...p); ctx.closePath();
      ctx.fillStyle = "rgba(30, 30, 30, 0.06)"; ctx.fill(); ctx.strokeStyle = "#333"; ctx.setLineDash([4, 3]); ctx.stroke();
    }
    if (m.hovered >= 0) {
      const [px, py] = toScreen(m.data.xy[2 * m.hovered], m.data.xy[2 * m.hovered + 1]);
      ctx.setLineDash([]); ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.arc(px, py, 5, 0, 2 * Math.PI); ctx.stroke();
    }
  };

  m.nearest = (px, py) => {  // the point nearest (px, py) within HOVER_PX, or -1
    const {cw, ch, counts, order} = m.grid, {xy} = m.data;
    const cx = Math.floor(px / HOVER_PX), cy = Math.floor(py / HOVER_PX);
    let best = -1, bestD = HOVER_PX * HOVER_PX;
    for (let y = Math.max(0, cy - 1); y <= Math.min(ch - 1, cy + 1); y++)
      for (let x = Math.max(0, cx - 1); x <= Math.min(cw - 1, cx + 1); x++)
        for (let k = counts[y * cw + x]; k < counts[y * cw + x + 1]; k++) {
          const i = order[k], [qx, qy] = toScreen(xy[2 * i], xy[2 * i + 1]), d = (qx - px) ** 2 + (qy - py) ** 2;
          if (d <= bestD) { best = i; bestD = d; }
        }
    return best;
  };

  m.showTip = (px, py) => {
    if (m.hovered < 0) { tip.style.display = "none"; return; }
    const {header, codes} = m.data, i = m.hovered;
    tipText.textContent = (i < header.n_train ? `train:${i}` : `test:${i - header.n_train}`) + " · " + header.names[codes[i]];
    const image = m.data.hover.column === i ? m.data.hover.uri : null;
    tipImage.style.display = image ? "block" : "none";
    if (image) tipImage.src = image;
    if (px !== undefined) {
      tip.style.left = Math.min(px + 14, stage.clientWidth - 150) + "px";
      tip.style.top = Math.max(0, py - 10) + "px";
    }
    tip.style.display = "block";
  };

  const at = (event) => { const r = marks.getBoundingClientRect(); return [event.clientX - r.left, event.clientY - r.top]; };
  marks.addEventListener("pointerdown", (event) => {
    marks.setPointerCapture(event.pointerId);
    const start = at(event);
    m.press = {start, view: m.view.slice()};
    if (m.mode === "lasso") m.drawing = [start];
  });
  marks.addEventListener("pointermove", (event) => {
    const [px, py] = at(event);
    if (m.press && m.mode === "pan") {
      const [dx, dy] = [px - m.press.start[0], py - m.press.start[1]];
      m.view = [m.press.view[0] - dx / m.sx, m.press.view[1] - dx / m.sx, m.press.view[2] + dy / m.sy, m.press.view[3] + dy / m.sy];
      m.draw(); return;
    }
    if (m.press && m.drawing) { m.drawing.push([px, py]); m.drawMarks(); return; }
    const i = m.nearest(px, py);
    if (i !== m.hovered) {
      m.hovered = i; m.drawMarks();
      clearTimeout(m.rest);
      if (i >= 0) m.rest = setTimeout(() => { if (m.hovered === i && m.sent !== i) { m.sent = i; m.setStateValue("hover", i); } }, REST_MS);
    }
    m.showTip(px, py);
  });
  marks.addEventListener("pointerleave", () => { if (!m.press) { m.hovered = -1; m.drawMarks(); m.showTip(); } });
  marks.addEventListener("pointerup", (event) => {
    const [px, py] = at(event), press = m.press, path = m.drawing;
    m.press = null; m.drawing = null;
    if (!press || m.mode === "pan") return;
    const moved = Math.hypot(px - press.start[0], py - press.start[1]) > 4 || path.length > 3;
    if (!moved) {  // a click: the point under the pointer
      const i = m.nearest(px, py);
      if (i >= 0) { m.selection = null; m.drawMarks(); m.setStateValue("selection", {point: i}); }
      return;
    }
    const step = Math.max(1, Math.ceil(path.length / 200));  // at most 200 vertices go to Python
    m.selection = path.filter((_, k) => k % step === 0).map(([x, y]) => toData(x, y));
    m.drawMarks();
    m.setStateValue("selection", {lasso: m.selection});
  });
  marks.addEventListener("wheel", (event) => {
    event.preventDefault();
    const [px, py] = at(event), [x, y] = toData(px, py), f = event.deltaY > 0 ? 1.25 : 0.8, v = m.view;
    m.view = [x - (x - v[0]) * f, x + (v[1] - x) * f, y - (y - v[2]) * f, y + (v[3] - y) * f];
    m.draw();
  }, {passive: false});
  reset.onclick = () => { m.view = m.data.header.bounds.slice(); m.draw(); };
  m.legend = () => {
    legend.replaceChildren();
    m.data.header.names.forEach((name, c) => {
      const item = el("span", "pm-item", legend), swatch = el("span", "pm-swatch", item);
      swatch.style.background = m.data.header.colours[c];
      item.append(`${name} (${m.data.header.counts[c].toLocaleString("en")})`);
    });
  };
  new ResizeObserver(() => m.data && m.draw()).observe(stage);
  return m;
}

export default function (component) {
  const {data, parentElement, setStateValue} = component;
  const m = parentElement.__pointMap || (parentElement.__pointMap = setup(parentElement));
  m.setStateValue = setStateValue;
  const parsed = parse(data);
  if (parsed.header.version !== m.version) {  // new points (another run or colouring): draw them
    m.data = parsed; m.version = parsed.header.version; m.view = parsed.header.bounds.slice();
    m.selection = parsed.lasso; m.hovered = -1;
    m.legend(); m.draw();
  } else {  // the same points, a new hover image: only the tooltip changes
    m.data.hover = parsed.hover; m.showTip();
  }
}
