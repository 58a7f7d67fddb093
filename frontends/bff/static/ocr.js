// The document page: hovering or focusing a box shows its text and confidence, and marks the
// line in the text beside the image (and the other way round).
(function () {
  "use strict";
  function activate(id, on) {
    document.querySelectorAll('[data-line="' + id + '"]').forEach(function (el) {
      el.classList.toggle("active", on);
    });
  }
  function caption(box, on) {
    var fig = box.closest("figure");
    var cap = fig && fig.querySelector(".ocr-caption");
    if (!cap) { return; }
    if (!on) { return; }
    cap.textContent = "";
    var strong = document.createElement("strong");
    strong.textContent = box.getAttribute("data-text");
    cap.appendChild(strong);
    cap.appendChild(document.createTextNode(" — " + box.getAttribute("data-confidence") + "% confidence"));
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".ocr-box").forEach(function (box) {
      var id = box.getAttribute("data-line");
      ["mouseenter", "focus"].forEach(function (name) {
        box.addEventListener(name, function () { activate(id, true); caption(box, true); });
      });
      ["mouseleave", "blur"].forEach(function (name) {
        box.addEventListener(name, function () { activate(id, false); });
      });
    });
    document.querySelectorAll(".ocr-lines li").forEach(function (li) {
      var id = li.getAttribute("data-line");
      li.addEventListener("mouseenter", function () { activate(id, true); });
      li.addEventListener("mouseleave", function () { activate(id, false); });
    });
  });
})();
