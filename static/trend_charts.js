// A scenario's weekly series, one chart per metric: each valid run a point (x: its place
// in the series), each change point a dashed line at the run that started the new level.
(() => {
  const box = document.getElementById("trend");
  const source = document.getElementById("trend-data");
  if (!box || !source || typeof uPlot === "undefined") return;
  const trend = JSON.parse(source.textContent);
  const runUrl = (pk) => box.dataset.runUrl.replace(/0\/$/, `${pk}/`);
  const scale = { db_ram_peak: (v) => v / 1048576, failure_rate: (v) => 100 * v };
  const unit = { p95_ms: "ms", failure_rate: "%", db_ram_peak: "MiB" };
  const width = Math.min(box.clientWidth || 900, 1100);
  for (const metric of trend) {
    if (!metric.points.length) continue;
    const runs = metric.points.map((p) => p[0]);
    const f = scale[metric.key] || ((v) => v);
    const xs = runs.map((_, i) => i);
    const ys = metric.points.map((p) => f(p[1]));
    const marks = metric.changes.map((c) => ({ at: runs.indexOf(c.run), worse: c.worse }));
    const section = document.createElement("div");
    section.className = "chart";
    section.dataset.metric = metric.key;
    const heading = document.createElement("h3");
    heading.textContent = `${metric.label}`;
    section.append(heading);
    box.append(section);
    new uPlot({
      width, height: 180,
      scales: { x: { time: false } },
      axes: [{ values: (u, ticks) => ticks.map((i) => (runs[i] !== undefined ? `#${runs[i]}` : "")) },
             { label: unit[metric.key] }],
      series: [{ label: "run", value: (u, i) => (runs[i] !== undefined ? `#${runs[i]}` : "") },
               { label: metric.label, stroke: "#2e90fa", points: { show: true, size: 6 } }],
      hooks: {
        draw: [(u) => {
          const ctx = u.ctx;
          ctx.save();
          ctx.setLineDash([6, 4]);
          ctx.lineWidth = 2;
          for (const mark of marks) {
            if (mark.at < 0) continue;
            const x = u.valToPos(mark.at - 0.5, "x", true);
            ctx.strokeStyle = mark.worse ? "#f04438" : "#12b76a";
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
          }
          ctx.restore();
        }],
      },
      cursor: { points: { size: 8 } },
    }, [xs, ys], section);
    const changes = document.createElement("p");
    changes.className = "meta";
    if (marks.length) changes.append(`${box.dataset.changeLabel} `);
    section.append(changes);
    for (const mark of marks) {
      if (mark.at < 0) continue;
      const link = document.createElement("a");
      link.href = runUrl(runs[mark.at]);
      link.className = `badge ${mark.worse ? "verdict-worse" : "verdict-better"}`;
      link.textContent = `#${runs[mark.at]}`;
      changes.append(link, " ");
    }
  }
})();
