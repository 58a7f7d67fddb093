// Upload with a progress bar: the form still works without JavaScript (a normal post).
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.querySelector("form[data-upload]");
    if (!form) { return; }
    var input = form.querySelector("input[type=file]");
    var bar = form.querySelector("progress");
    var box = form.querySelector(".upload-progress");
    var status = form.querySelector(".upload-status");
    var maxBytes = parseInt(form.getAttribute("data-max-bytes") || "0", 10);
    form.addEventListener("submit", function (event) {
      var file = input.files && input.files[0];
      if (!file) { return; }
      if (maxBytes && file.size > maxBytes) {
        event.preventDefault();
        status.textContent = "This file is " + (file.size / 1048576).toFixed(1) +
          " MB; the limit is " + (maxBytes / 1048576).toFixed(0) + " MB.";
        box.hidden = false;
        return;
      }
      event.preventDefault();
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) {
          bar.max = e.total; bar.value = e.loaded;
          status.textContent = "Uploading… " + Math.round(100 * e.loaded / e.total) + "%";
        }
      });
      xhr.addEventListener("load", function () {
        if (xhr.status >= 200 && xhr.status < 300) {
          window.location.assign(xhr.responseURL || form.action);
          return;
        }
        var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
        var problem = doc.querySelector(".problem");
        status.textContent = problem ? problem.innerText.trim() : "The upload failed (" + xhr.status + ").";
        status.classList.add("errors");
      });
      xhr.addEventListener("error", function () {
        status.textContent = "The upload was interrupted; please try again.";
        status.classList.add("errors");
      });
      box.hidden = false;
      status.classList.remove("errors");
      status.textContent = "Uploading…";
      xhr.send(new FormData(form));
    });
  });
})();
