// One websocket, kept open: connect, reconnect with jittered exponential backoff (0.5 s doubling, at most 30 s), JSON
// frames in and out, and the one place that knows the server's close codes (saas/core/consumers.py). A socket
// closed with one of them lost its right and reconnecting will not bring it back; it is tried once anyway (a
// password change in this browser renews the session's key and closes the old sockets with 4401 too), and when
// that retry is refused too the page is told why and the socket stays closed.
//
//   const live = window.crewdeskSocket("/ws/runs/" + id + "/", {
//     onEvent: function (event) { ... },        // every JSON frame, parsed (frames that are not JSON are skipped)
//     onOpen: function () { ... },              // every (re)connection: ask for what was missed while away
//     onClose: function (closeEvent) { ... },   // every close, before the reconnect is scheduled
//     onLost: function (message, code) { ... },// access lost for good ("You were signed out..."): show it
//     reconnect: function () { return true; },  // false stops reconnecting (a run that finished)
//     maxDelay: 30000,                          // the longest wait between attempts, in ms
//   });
//   live.send({ type: "ask", ... })             // true when sent now, false when not connected
//   live.close()                                // closes and stops reconnecting
(function () {
  "use strict";
  const LOST = {
    4401: "You were signed out. Sign in again to continue.",
    4403: "Your role in this team no longer allows this.",
    4404: "You no longer have access to this.",
  };
  window.crewdeskAccessLost = function (code) { return LOST[code] || ""; };

  window.crewdeskSocket = function (path, handlers) {
    handlers = handlers || {};
    const maxDelay = handlers.maxDelay || 30000;
    let socket = null;
    let attempt = 0;
    let lost = 0;  // the close code that ended the last socket's access, while one retry is under way
    let stopped = false;
    let timer = null;

    function call(name) {
      const handler = handlers[name];
      if (typeof handler === "function") return handler.apply(null, Array.prototype.slice.call(arguments, 1));
      return undefined;
    }

    function connect() {
      timer = null;
      if (stopped) return;
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const current = new WebSocket(scheme + "://" + location.host + path);
      socket = current;
      let opened = false;
      current.onopen = function () { opened = true; attempt = 0; lost = 0; call("onOpen", current); };
      current.onmessage = function (message) {
        let event;
        try { event = JSON.parse(message.data); } catch (e) { return; }
        call("onEvent", event, current);
      };
      current.onclose = function (event) {
        if (socket === current) socket = null;
        call("onClose", event);
        if (stopped) return;
        if (LOST[event.code]) lost = event.code;
        else if (lost && !opened) {  // the retry was refused too: say why, and stop
          stopped = true;
          call("onLost", LOST[lost], lost);
          return;
        }
        if (handlers.reconnect && !handlers.reconnect()) return;
        attempt += 1;
        // Jittered (half to all of the doubling delay): after a server restart, thousands of tabs do not all
        // knock at the same instant.
        const delay = Math.min(maxDelay, 500 * 2 ** attempt);
        timer = setTimeout(connect, delay / 2 + Math.random() * delay / 2);
      };
    }

    connect();
    return {
      send: function (frame) {
        if (!socket || socket.readyState !== WebSocket.OPEN) return false;
        socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));
        return true;
      },
      isOpen: function () { return !!socket && socket.readyState === WebSocket.OPEN; },
      reconnectNow: function () {  // a page that needs the socket now (a question to send) skips the wait
        if (stopped || (socket && socket.readyState <= WebSocket.OPEN)) return;
        if (timer) clearTimeout(timer);
        connect();
      },
      close: function () {
        stopped = true;
        if (timer) clearTimeout(timer);
        if (socket) socket.close();
      },
    };
  };
})();
