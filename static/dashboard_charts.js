// The managers' dashboard trends: incidents per month by severity, median time to detect
// and to resolve, regressions confirmed and fixed. The same figures are in the table below.
(() => {
  const box = document.getElementById("monthly-charts");
  const source = document.getElementById("monthly-data");
  if (!box || !source || typeof uPlot === "undefined") return;
  const data = JSON.parse(source.textContent);
  const labels = JSON.parse(box.dataset.labels);
  const xs = data.months.map((_, i) => i);
  const monthName = (i) => (data.months[i] ? data.months[i].slice(0, 7) : "");
  const width = Math.min(box.clientWidth || 900, 1100);
  const colours = ["#d92d20", "#f79009", "#2e90fa", "#667085"];
  const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 40] }) : undefined;
  const chart = (key, title, series, ys) => {
    const section = document.createElement("div");
    section.className = "chart";
    section.dataset.chart = key;
    const heading = document.createElement("h3");
    heading.textContent = title;
    section.append(heading);
    box.append(section);
    new uPlot({
      width, height: 180,
      scales: { x: { time: false } },
      axes: [{ values: (u, ticks) => ticks.map((i) => monthName(i)) }, {}],
      series: [{ label: labels.month, value: (u, i) => monthName(i) }, ...series],
    }, [xs, ...ys], section);
  };
  const severities = Object.keys(data.incidents);
  chart("incidents", labels.incidents,
    severities.map((sev, n) => ({ label: sev.toUpperCase(), stroke: colours[n % colours.length], fill: colours[n % colours.length] + "55", paths: bars })),
    severities.map((sev) => data.incidents[sev]));
  chart("times", labels.times,
    [{ label: labels.ttd, stroke: "#2e90fa", points: { show: true } },
     { label: labels.ttr, stroke: "#7a5af8", points: { show: true } }],
    [data.ttd_minutes, data.ttr_minutes]);
  chart("regressions", labels.regressions,
    [{ label: labels.confirmed, stroke: "#f04438", points: { show: true } },
     { label: labels.fixed, stroke: "#12b76a", points: { show: true } }],
    [data.regressions_confirmed, data.regressions_fixed]);
})();
