// Sign-in links carry the token in the #fragment, which browsers never send to the server: fill it in and submit.
(function () {
  "use strict";
  var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (!match) { return; }
  history.replaceState(null, "", window.location.pathname);
  document.getElementById("token").value = decodeURIComponent(match[1]);
  document.getElementById("login").submit();
})();
