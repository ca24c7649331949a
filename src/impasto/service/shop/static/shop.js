/* impasto: live previews (server-sent events, polling fallback) and friendly form checks.
   Everything here is an enhancement: without JavaScript the forms post and the pages refresh. */
(function () {
  "use strict";

  var LABELS = { queued: "Waiting for an easel", done: "Ready", failed: "Could not be painted", cancelled: "Cancelled" };
  var STEPS = ["ordered", "rendering", "ready", "printed", "shipped"];

  function label(p) {
    if (p.status === "running") {
      return "Painting · " + Math.round(p.progress * 100) + "%" + (p.eta_seconds ? " · about " + p.eta_seconds + " s left" : "");
    }
    if (p.status === "queued" && p.sketch) return "Sketch · waiting for an easel";
    return LABELS[p.status] || p.status;
  }

  function swapImage(img, url) {
    if (!url || img.getAttribute("src") === url) return;
    var next = new Image();                 // load first, then swap: no flicker between snapshots
    next.onload = function () { img.src = url; img.hidden = false; };
    next.src = url;
  }

  function updateTile(tile, p) {
    tile.className = "tile status-" + p.status;
    tile.querySelector("[data-progress]").value = p.progress;
    tile.querySelector("[data-status]").textContent = label(p);
    swapImage(tile.querySelector("[data-image]"), p.image_url);
    var badge = tile.querySelector("[data-sketch]");
    if (badge) badge.hidden = !p.sketch;
    var order = tile.querySelector("[data-order]");
    if (p.order_url) { order.href = p.order_url; order.hidden = false; }
  }

  function updateOrder(box, o) {
    var reached = STEPS.indexOf(o.status === "paid" ? "ordered" : o.status);   // paid: ordered, not painting yet
    box.querySelectorAll("[data-step]").forEach(function (li, i) { li.classList.toggle("reached", i <= reached); });
    var bar = box.querySelector("[data-print-progress]");
    if (bar) { bar.value = o.print_progress; bar.hidden = !!o.download_url; }
    var link = box.querySelector("[data-download]");
    if (link && o.download_url) { link.href = o.download_url; link.hidden = false; }
    var lede = o.download_url ? "ready" : ["awaiting_payment", "expired", "cancelled"].indexOf(o.status) >= 0
      ? o.status.replace("_payment", "") : "painting";
    box.querySelectorAll("[data-lede]").forEach(function (p) { p.hidden = p.dataset.lede !== lede; });
    var pay = box.querySelector("[data-pay]");
    if (pay && o.status !== "awaiting_payment") pay.hidden = true;
  }

  function update(view) {
    view.previews.forEach(function (p) {
      var tile = document.querySelector('[data-job="' + p.id + '"]');
      if (tile) updateTile(tile, p);
    });
    view.orders.forEach(function (o) {
      var box = document.querySelector('[data-order-number="' + o.number + '"]');
      if (box) updateOrder(box, o);
    });
    var summary = document.querySelector("[data-summary]");
    if (summary) {
      var ready = view.previews.filter(function (p) { return p.status === "done"; }).length;
      summary.textContent = view.done
        ? "All done — " + ready + " of " + view.previews.length + " previews are ready. Choose the one you love."
        : "Painting " + view.previews.length + " previews — " + ready + " ready so far. You can leave this page: we email you when they are done.";
    }
  }

  function poll(url) {
    fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (view) { update(view); if (!view.done) setTimeout(function () { poll(url); }, 2000); })
      .catch(function () { setTimeout(function () { poll(url); }, 5000); });
  }

  function follow(root) {
    if (!window.EventSource) { poll(root.dataset.poll); return; }
    var source = new EventSource(root.dataset.events), failures = 0, heard = Date.now(), finished = false;
    var watchdog = setInterval(function () {   // a stream gone quiet behind a proxy: ask once
      if (finished) { clearInterval(watchdog); return; }
      if (Date.now() - heard > 20000) { heard = Date.now(); once(root.dataset.poll); }
    }, 5000);
    source.addEventListener("portrait", function (e) {
      failures = 0; heard = Date.now();
      var view = JSON.parse(e.data); update(view); finished = view.done;
    });
    source.addEventListener("done", function () { finished = true; source.close(); });
    source.onerror = function () {           // a proxy that buffers or drops streams: poll instead
      if (++failures >= 3 || source.readyState === EventSource.CLOSED) {
        finished = true; source.close(); poll(root.dataset.poll);
      }
    };
  }

  function once(url) {
    fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (view) { if (view) update(view); })
      .catch(function () {});
  }

  function checkUpload(form) {
    var error = form.querySelector("#upload-error");
    form.addEventListener("submit", function (e) {
      var file = form.photo.files[0], max = Number(form.dataset.maxBytes), message = "";
      if (!file) message = "Please choose a photo to upload.";
      else if (!/^image\/(jpeg|png|webp)$/.test(file.type)) message = "Please choose a JPEG, PNG or WebP photo.";
      else if (file.size > max) message = "This photo is larger than the " + Math.round(max / 1048576) + " MB limit. Please choose a smaller one.";
      else if (!form.email.checkValidity()) message = "Please enter a valid email address (name@example.com).";
      else if (!form.consent.checked) message = "Please agree that we may paint and keep your photo.";
      if (message) { e.preventDefault(); error.textContent = message; error.hidden = false; error.focus && error.scrollIntoView({ block: "nearest" }); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.querySelector("[data-portrait]");
    if (root && root.dataset.events) follow(root);
    var upload = document.querySelector("[data-upload]");
    if (upload) checkUpload(upload);
    document.querySelectorAll("form").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) { e.preventDefault(); return; }
        if (e.defaultPrevented) return;
        var button = form.querySelector("[data-busy-text]");
        if (button) { setTimeout(function () { button.disabled = true; button.textContent = button.dataset.busyText; }, 0); }
      });
    });
  });
})();
