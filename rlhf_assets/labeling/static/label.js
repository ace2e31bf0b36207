// Keyboard shortcuts for the labeling form: 1/A, 2/T, 3/B answer; S skips; C focuses the comment box.
// Each key presses the same button a mouse would, so keyboard and mouse submit identical forms.
(function () {
  "use strict";
  var form = document.getElementById("label-form");
  if (!form) { return; }
  var buttons = { "1": "choose-a", "a": "choose-a", "2": "choose-tie", "t": "choose-tie",
                  "3": "choose-b", "b": "choose-b", "s": "skip" };
  var comment = document.getElementById("comment");
  var sent = false;

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) { return; }
    if (document.activeElement === comment) {
      if (event.key === "Escape") { comment.blur(); }
      return;
    }
    var key = event.key.toLowerCase();
    if (key === "c") { event.preventDefault(); comment.focus(); return; }
    if (!buttons[key] || sent) { return; }
    event.preventDefault();
    sent = true;
    form.requestSubmit(document.getElementById(buttons[key]));
  });
})();
