// Draws every <figure data-chart> of the page with uPlot, from the JSON it carries.
(function () {
  "use strict";
  var colors = ["#2f6fd6", "#d6452f", "#2a9d4b", "#a05ad6", "#d69a2f", "#2fb8d6"];
  function draw(fig) {
    var spec = JSON.parse(fig.querySelector("script.chart-data").textContent);
    var names = Object.keys(spec.series);
    var data = [spec.x].concat(names.map(function (n) { return spec.series[n]; }));
    var bars = spec.kind === "bars";
    var series = [{}].concat(names.map(function (n, i) {
      // points shown: a window alone between empty ones is still seen
      var s = { label: n, stroke: colors[i % colors.length], width: 2,
                points: { show: true, size: 5 } };
      if (bars) {
        s.fill = colors[i % colors.length] + "55";
        s.paths = uPlot.paths.bars({ size: [0.8 / names.length], align: i === 0 ? -1 : 1 });
      }
      return s;
    }));
    var opts = {
      width: 540, height: 220, series: series,
      scales: { x: { time: !bars } },
      axes: [{}, { label: spec.unit || "" }],
    };
    new uPlot(opts, data, fig);
    fig.setAttribute("data-drawn", "true");
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("figure[data-chart]").forEach(draw);
  });
})();
