// Two runs' series overlaid on one time axis (seconds since each load started).
(async () => {
  const box = document.getElementById("overlay");
  if (!box || typeof uPlot === "undefined") return;
  const fetchJson = async (url) => {
    const response = await fetch(url);
    return response.ok ? response.json() : null;
  };
  const [base, cand] = await Promise.all([
    fetchJson(box.dataset.baseline), fetchJson(box.dataset.candidate),
  ]);
  if (!base || !cand) return;
  const labels = JSON.parse(box.dataset.labels);
  const mib = (v) => (v === null ? null : v / 1048576);
  // One x axis holding both runs' times; each series is null where it has no point.
  const merged = (key, scale = (v) => v) => {
    const points = new Map();
    base.t.forEach((t, i) => points.set(t, [scale(base[key][i]), null]));
    cand.t.forEach((t, i) => {
      const row = points.get(t) || [null, null];
      row[1] = scale(cand[key][i]);
      points.set(t, row);
    });
    const ts = [...points.keys()].sort((a, b) => a - b);
    return [ts, ts.map((t) => points.get(t)[0]), ts.map((t) => points.get(t)[1])];
  };
  const width = Math.min(box.clientWidth || 900, 1100);
  for (const [title, key, scale] of [[labels.p95, "p95_ms"], [labels.rps, "rps"],
                                     [labels.memory, "db_pss", mib]]) {
    const data = merged(key, scale);
    if (!data[1].some((v) => v !== null) && !data[2].some((v) => v !== null)) continue;
    const section = document.createElement("div");
    section.className = "chart";
    const heading = document.createElement("h3");
    heading.textContent = title;
    section.append(heading);
    box.append(section);
    new uPlot({
      width, height: 200, scales: { x: { time: false } }, axes: [{ label: "s" }, {}],
      series: [{}, { label: labels.baseline, stroke: "#98a2b3", spanGaps: true },
               { label: labels.candidate, stroke: "#f04438", spanGaps: true }],
    }, data, section);
  }
})();
