// nsqadmin's pages: live graphs as inline SVG, the live counter, and actions after a
// confirmation. Text from the cluster only ever reaches the page through textContent
// and setAttribute, never as markup.
(function () {
  "use strict";

  var body = document.body;
  var base = body.getAttribute("data-base") || "";
  var SVG = "http://www.w3.org/2000/svg";
  var intervalMs = 2000;

  function $$(selector) {
    return Array.prototype.slice.call(document.querySelectorAll(selector));
  }

  function commafy(n) {
    return Math.round(n).toLocaleString("en-US");
  }

  function formatRate(value) {
    if (value === null || value === undefined) { return "–"; }
    if (value >= 100 || Number.isInteger(value)) { return commafy(value); }
    return value.toFixed(value >= 10 ? 1 : 2);
  }

  function last(values) {
    for (var i = values.length - 1; i >= 0; i--) {
      if (values[i] !== null) { return values[i]; }
    }
    return null;
  }

  function svgNode(name, attrs) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    return node;
  }

  function clear(node) {
    while (node.firstChild) { node.removeChild(node.firstChild); }
  }

  // -- messages ----------------------------------------------------------------------

  function showMessage(kind, text) {
    var box = document.getElementById("messages");
    var div = document.createElement("div");
    div.className = "alert " + kind;
    div.setAttribute("role", "alert");
    div.textContent = text;
    box.appendChild(div);
    div.scrollIntoView({block: "nearest"});
  }

  // -- drawing -----------------------------------------------------------------------

  // Each step's x, from 0 to width by its time: polls of a loaded cluster are not evenly
  // spaced. The server starts the steps at the first sample, so that is x = 0.
  function xsOf(times, width) {
    var first = times[0], span = times[times.length - 1] - first;
    return times.map(function (t) { return span > 0 ? ((t - first) / span) * width : 0; });
  }

  // An SVG path through the values (null leaves a gap) at xs, y from height (0) up to
  // top (max).
  function linePath(values, xs, height, top, max) {
    var d = "";
    var pen = false;
    values.forEach(function (value, i) {
      if (value === null || xs[i] === undefined) { pen = false; return; }
      var y = (height - (value / max) * (height - top)).toFixed(1);
      d += (pen ? "L" : "M") + xs[i].toFixed(1) + " " + y;
      pen = true;
    });
    return d;
  }

  function maxOf(lines) {
    var max = 0;
    lines.forEach(function (line) {
      line.values.forEach(function (v) { if (v !== null && v > max) { max = v; } });
    });
    return max || 1;
  }

  // The axis top: the maximum rounded up to 1, 2 or 5 times a power of ten.
  function niceMax(lines) {
    var max = maxOf(lines);
    var power = Math.pow(10, Math.floor(Math.log10(max)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (max <= steps[i] * power) { return steps[i] * power; }
    }
    return max;
  }

  // The paths of several lines ({values, cls}) sharing one scale.
  function drawLines(parent, lines, xs, height, top, max) {
    lines.forEach(function (line) {
      var d = linePath(line.values, xs, height, top, max);
      if (d) { parent.appendChild(svgNode("path", {d: d, "class": "line " + line.cls})); }
    });
  }

  var LABELS = {rate: "in", finish: "finished"};

  function drawSpark(svg, times, lines) {
    clear(svg);
    drawLines(svg, lines, xsOf(times, 120), 23, 2, maxOf(lines));
    svg.classList.toggle("empty", !svg.firstChild);
    if (!svg.firstChild) { return; }
    var title = svgNode("title", {});
    title.textContent = lines.map(function (line) {
      return LABELS[line.kind] + " " + formatRate(last(line.values)) + "/s";
    }).join(", ") + " now";
    svg.appendChild(title);
  }

  function ago(seconds) {
    if (seconds < 90) { return "-" + Math.round(seconds) + "s"; }
    return "-" + Math.round(seconds / 60) + "m";
  }

  function drawChart(svg, times, lines) {
    var width = 800, height = 160, left = 56, bottom = 18, top = 8;
    var plotW = width - left - 8, plotH = height - bottom;
    clear(svg);
    var max = niceMax(lines);
    [0, 0.5, 1].forEach(function (f) {
      var y = (plotH - f * (plotH - top)).toFixed(1);
      svg.appendChild(svgNode("line", {x1: left, x2: width - 8, y1: y, y2: y, "class": "grid"}));
      var label = svgNode("text", {x: left - 6, y: Number(y) + 4, "class": "axis", "text-anchor": "end"});
      label.textContent = formatRate(max * f);
      svg.appendChild(label);
    });
    if (times.length > 1) {
      var span = times[times.length - 1] - times[0];
      [[left, ago(span), "start"], [width - 8, "now", "end"]].forEach(function (t) {
        var text = svgNode("text", {x: t[0], y: height - 4, "class": "axis", "text-anchor": t[2]});
        text.textContent = t[1];
        svg.appendChild(text);
      });
    }
    var g = svgNode("g", {transform: "translate(" + left + " 0)"});
    drawLines(g, lines, xsOf(times, plotW), plotH, top, max);
    svg.appendChild(g);
    svg.setAttribute("data-last", String(lines.length ? last(lines[0].values) : null));
  }

  // One column of a series in the graphs document ([] if it has none yet).
  function column(doc, name, kind) {
    var series = doc.series[name];
    return (series && series[kind || "rate"]) || [];
  }

  function draw(doc) {
    intervalMs = Math.max(500, (doc.interval || 2) * 1000);
    var sparkPoints = Number(body.getAttribute("data-spark")) || 60;
    var sparkTimes = doc.times.slice(-sparkPoints);
    $$("svg.spark[data-series]").forEach(function (svg) {
      var name = svg.getAttribute("data-series");
      var kinds = (svg.getAttribute("data-kinds") || "rate").split(" ");
      drawSpark(svg, sparkTimes, kinds.map(function (kind, i) {
        return {values: column(doc, name, kind).slice(-sparkPoints), kind: kind, cls: "c" + i};
      }));
    });
    $$("[data-rate]").forEach(function (cell) {
      var value = last(column(doc, cell.getAttribute("data-rate"), cell.getAttribute("data-kind")));
      var unit = cell.getAttribute("data-unit");
      cell.textContent = unit ? (value === null ? "" : formatRate(value) + unit) : formatRate(value);
    });
    $$("svg.chart").forEach(function (svg) {
      var lines = Array.prototype.map.call(svg.parentNode.querySelectorAll(".legend li"), function (li) {
        return {values: column(doc, li.getAttribute("data-series"), li.getAttribute("data-kind")),
                cls: li.className};
      });
      drawChart(svg, doc.times, lines);
    });
  }

  function getJSON(url) {
    return fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) { return r.json(); });
  }

  function pollGraphs(url) {
    getJSON(url).then(draw).catch(function () {}).then(function () {
      setTimeout(function () { pollGraphs(url); }, intervalMs);
    });
  }

  // -- the counter page ----------------------------------------------------------------

  function runCounter(output) {
    var shown = Number(output.getAttribute("data-total")) || 0;
    // The rate is unknown (null) until a second total is in.
    var target = shown, rate = null, stamp = null, frameAt = null;
    function poll() {
      getJSON(base + "/api/counter").then(function (doc) {
        var total = 0;
        Object.keys(doc.stats || {}).forEach(function (k) { total += doc.stats[k].message_count; });
        var now = Date.now();
        if (stamp !== null && total >= target) {
          rate = (total - target) / ((now - stamp) / 1000);
          document.getElementById("counter-rate").textContent =
            formatRate(rate) + " messages per second, across every channel on every nsqd";
        }
        if (total < shown) { shown = total; }
        target = total;
        stamp = now;
      }).catch(function () {}).then(function () { setTimeout(poll, 2000); });
    }
    function frame(now) {
      // Count up towards the last total at the measured rate, never past it.
      if (frameAt !== null && shown < target) {
        shown = Math.min(target, shown + Math.max(rate, 1) * (now - frameAt) / 1000);
      }
      frameAt = now;
      output.textContent = commafy(Math.floor(shown));
      output.setAttribute("data-shown", String(Math.floor(shown)));
      window.requestAnimationFrame(frame);
    }
    poll();
    window.requestAnimationFrame(frame);
  }

  // -- actions -------------------------------------------------------------------------

  function confirmThen(question, then) {
    var dialog = document.getElementById("confirm");
    dialog.querySelector(".question").textContent = question;
    dialog.returnValue = "";
    dialog.addEventListener("close", function onClose() {
      dialog.removeEventListener("close", onClose);
      if (dialog.returnValue === "ok") { then(); }
    });
    dialog.showModal();
  }

  function send(method, url, payload, next) {
    fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", Accept: "application/json"},
      body: payload === null ? null : JSON.stringify(payload)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (doc) {
        if (!r.ok) {
          showMessage("error", r.status + " " + (doc.message || r.statusText));
        } else if (doc.message) {
          showMessage("warn", doc.message);
        } else {
          window.location.assign(next || window.location.href);
        }
      });
    }).catch(function (err) { showMessage("error", String(err)); });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    if (!button) { return; }
    event.preventDefault();
    var raw = button.getAttribute("data-body");
    confirmThen(button.getAttribute("data-confirm"), function () {
      send(button.getAttribute("data-method"), button.getAttribute("data-url"),
           raw ? JSON.parse(raw) : null, button.getAttribute("data-next"));
    });
  });

  var form = document.getElementById("create");
  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var topic = form.elements.topic.value.trim();
      var channel = form.elements.channel.value.trim();
      var what = channel ? "channel " + channel + " of topic " + topic : "topic " + topic;
      confirmThen("Create " + what + "?", function () {
        send("POST", form.getAttribute("data-url"), {topic: topic, channel: channel},
             base + "/topics/" + encodeURIComponent(topic));
      });
    });
  }

  // -- start ---------------------------------------------------------------------------

  var graphs = body.getAttribute("data-graphs");
  if (graphs) { pollGraphs(graphs); }
  var counter = document.getElementById("counter");
  if (counter) { runCounter(counter); }
  $$("[data-graphite-target]").forEach(function (span) {
    getJSON(base + "/api/graphite?metric=rate&target=" +
            encodeURIComponent(span.getAttribute("data-graphite-target")))
      .then(function (doc) { span.textContent = doc.rate ? doc.rate + " /s" : ""; })
      .catch(function () {});
  });
}());
