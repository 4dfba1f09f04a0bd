// Draws the spend page's two charts from the JSON block the server rendered. The tables carry the
// exact figures; the charts are a picture of them (numbers parsed for drawing only).
(function () {
  "use strict";
  var node = document.getElementById("chart-data");
  if (!node || typeof Chart === "undefined") { return; }
  var data = JSON.parse(node.textContent);
  var palette = ["#2357c6", "#e07b24", "#2a9d8f", "#c0392b", "#8e44ad", "#7f8c8d", "#d4a72c",
                 "#1abc9c", "#34495e", "#e84393", "#6c5ce7", "#00b894", "#fdcb6e", "#636e72",
                 "#0984e3", "#d63031", "#a29bfe", "#55efc4", "#fab1a0", "#2d3436"];
  Chart.defaults.animation = false;
  Chart.defaults.font.family = "system-ui, sans-serif";
  var spend = document.getElementById("spend-chart");
  if (spend) {
    new Chart(spend, {
      type: "bar",
      data: {
        labels: data.days,
        datasets: data.teams.map(function (t, i) {
          return { label: t.team, data: t.values.map(Number), backgroundColor: palette[i % palette.length] };
        })
      },
      options: {
        maintainAspectRatio: false,
        scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "USD" } } },
        plugins: { legend: { position: "bottom" } }
      }
    });
  }
  var models = document.getElementById("model-chart");
  if (models) {
    new Chart(models, {
      type: "bar",
      data: {
        labels: data.models.map(function (m) { return m.model; }),
        datasets: [{ label: "USD", data: data.models.map(function (m) { return Number(m.value); }),
                     backgroundColor: palette[0] }]
      },
      options: { indexAxis: "y", maintainAspectRatio: false, plugins: { legend: { display: false } } }
    });
  }
})();
