// drtrt station: live panels (long-polling /api/version), lesion toggles, print, confirmations.
// Served by the app itself; no framework, no request leaves the machine.
"use strict";

function paintSwatches(root) {
  root.querySelectorAll(".swatch[data-colour]").forEach(function (el) { el.style.background = el.dataset.colour; });
}

// Which lesion layers are shown is kept for this visit only (live refreshes keep it); another patient's
// visit starts with every layer on, and the choices made for other visits are forgotten.
function layerKey(code) { return "layer:" + window.location.pathname + ":" + code; }

function forgetOtherVisitsLayers() {
  Object.keys(sessionStorage).forEach(function (key) {
    if (key.indexOf("layer") === 0 && key.indexOf(layerKey("")) !== 0) { sessionStorage.removeItem(key); }
  });
}

function bindToggles(root) {
  root.querySelectorAll("input[data-toggle]").forEach(function (box) {
    var slot = box.closest(".slot, .report-slot");
    var saved = sessionStorage.getItem(layerKey(box.dataset.toggle));
    if (saved !== null) { box.checked = saved === "on"; }
    function apply() {
      slot.querySelectorAll('.layer[data-code="' + box.dataset.toggle + '"]').forEach(function (layer) {
        layer.classList.toggle("off", !box.checked);
      });
    }
    box.addEventListener("change", function () {
      sessionStorage.setItem(layerKey(box.dataset.toggle), box.checked ? "on" : "off");
      apply();
    });
    apply();
  });
  root.querySelectorAll("img.layer").forEach(function (img) {
    img.addEventListener("error", function () { img.remove(); });
  });
}

// The read page's zoom: the photo (full resolution) grows inside its scrolling frame, layers with it.
function bindZoom(root) {
  root.querySelectorAll("button[data-zoom]").forEach(function (button) {
    var inner = button.closest(".slot").querySelector(".zoom-inner");
    button.addEventListener("click", function () {
      var zoom = parseFloat(inner.dataset.zoom || "1") * (button.dataset.zoom === "in" ? 1.5 : 1 / 1.5);
      zoom = Math.min(8, Math.max(1, zoom));
      inner.dataset.zoom = String(zoom);
      inner.style.width = (100 * zoom) + "%";
    });
  });
}

function refreshPanels() {
  var panels = document.querySelectorAll("[data-live]");
  return Promise.all(Array.prototype.map.call(panels, function (panel) {
    return fetch(panel.dataset.live, {credentials: "same-origin"}).then(function (response) {
      if (response.redirected || !response.ok) { window.location.reload(); return; }
      return response.text().then(function (html) {
        panel.innerHTML = html;
        paintSwatches(panel);
        bindToggles(panel);
      });
    });
  }));
}

function poll(version) {
  fetch("/api/version?since=" + encodeURIComponent(version), {credentials: "same-origin"})
    .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
    .then(function (state) {
      if (state.version !== version) {
        document.body.dataset.version = state.version;
        return refreshPanels().then(function () { poll(state.version); });
      }
      poll(version);
    })
    .catch(function () { setTimeout(function () { poll(version); }, 3000); });
}

document.addEventListener("DOMContentLoaded", function () {
  forgetOtherVisitsLayers();
  paintSwatches(document);
  bindToggles(document);
  bindZoom(document);
  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.addEventListener("click", function () { window.print(); });
  });
  var close = document.getElementById("close");
  if (close) {
    close.addEventListener("submit", function (event) {
      var verdict = document.getElementById("verdict");
      if (verdict && verdict.dataset.complete !== "yes" && !window.confirm(close.dataset.confirmIncomplete)) {
        event.preventDefault();
      }
    });
  }
  if (document.querySelector("[data-live]")) { poll(document.body.dataset.version); }
});
