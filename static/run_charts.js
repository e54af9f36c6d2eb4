// The run's charts on one time axis (uPlot, served from static/vendor by `make vendor`).
(async () => {
  const box = document.getElementById("charts");
  if (!box || typeof uPlot === "undefined") return;
  const response = await fetch(box.dataset.series);
  if (!response.ok) return;
  const data = await response.json();
  const labels = JSON.parse(box.dataset.labels);
  const mib = (values) => values.map((v) => (v === null ? null : v / 1048576));
  // A fitted line (bytes = intercept + per_minute * t / 60) over the steady phase only.
  const fitted = (fit) => data.t.map((t) => (fit && t >= fit.start_s && t <= fit.end_s
    ? (fit.intercept + fit.per_minute * t / 60) / 1048576 : null));
  const fits = data.fits || {};
  // Locust's rows and the memory sampler's rows interleave on t: each keeps its own
  // points and uPlot bridges the gaps of the other.
  const charts = [
    [labels.latency, [["p50", data.p50_ms], ["p95", data.p95_ms]]],
    [labels.load, [["users", data.users], ["req/s", data.rps]]],
    [labels.failures, [["failures/s", data.failures_per_s]]],
    [labels.memory, [["DB PSS", mib(data.db_pss)], ["DB anon", mib(data.db_pss_anon)],
                     ["DB cgroup", mib(data.db_cgroup)], ["target RSS", mib(data.target_rss)],
                     ["target PSS", mib(data.target_pss)],
                     ["DB fit", fitted(fits.db)], ["target fit", fitted(fits.target)]]],
  ];
  const colors = ["#2e90fa", "#f04438", "#12b76a", "#7a5af8", "#f79009", "#101828",
                  "#0e9384", "#dd2590", "#667085"];
  const width = Math.min(box.clientWidth || 900, 1100);
  // Each endpoint's p95 on a time axis of its own (one row a second per endpoint): a slow
  // route holding the server's workers shows as the light routes' p95 rising with it.
  const endpoints = data.endpoints || { t: [], lines: [] };
  const plots = charts.map(([title, lines]) => [title, lines, data.t]);
  plots.push([labels.endpoints, endpoints.lines.map((line) => [line.label, line.p95_ms]),
              endpoints.t]);
  for (const [title, lines, xs] of plots) {
    if (!lines.some(([, values]) => values.some((v) => v !== null))) continue;
    const section = document.createElement("div");
    section.className = "chart";
    const heading = document.createElement("h3");
    heading.textContent = title;
    section.append(heading);
    box.append(section);
    new uPlot(
      {
        width,
        height: 200,
        scales: { x: { time: false } },
        axes: [{ label: "s" }, {}],
        series: [{}, ...lines.map(([label], i) => ({
          label, stroke: colors[i % colors.length], spanGaps: true,
        }))],
      },
      [xs, ...lines.map(([, values]) => values)],
      section,
    );
  }
})();
