import PeregrineHTTP

/// `GET /` on the management port: a live monitor in the spirit of PowerMTA's
/// web monitor (issue 17). One self-contained page: no external script, style
/// or font, so it works on an isolated management network. It polls the JSON
/// API (`/status`, `/queues`) once a second and computes per-second rates from
/// the deltas; the Pause/Resume buttons call the authenticated API
/// (`POST /queues/pause|resume` with `Authorization: Bearer`). The token is
/// typed in (or given as `#token=…` in the URL: a fragment never reaches a
/// server or a log) and kept in the tab's sessionStorage only.
enum MonitorPage {
    static var response: HTTPResponse {
        var r = HTTPResponse.text(html, contentType: "text/html; charset=utf-8")
        // The page may only run its own inline script and talk to this listener.
        r.headers.append((name: "Content-Security-Policy",
                          value: "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:"))
        r.headers.append((name: "Cache-Control", value: "no-store"))
        return r
    }

    static let html = #"""
    <!DOCTYPE html>
    <html lang="en"><head><meta charset="utf-8"><title>Peregrine monitor</title>
    <style>
    body { font: 13px/1.4 system-ui, sans-serif; margin: 1em 1.5em; color: #222; }
    h1 { font-size: 20px; margin: 0 0 .3em; } h2 { font-size: 15px; margin: 1.2em 0 .4em; }
    .totals { display: flex; gap: 1.2em; flex-wrap: wrap; }
    .card { border: 1px solid #ddd; border-radius: 6px; padding: .5em .9em; min-width: 9em; }
    .card b { display: block; font-size: 20px; } .card small { color: #666; }
    table { border-collapse: collapse; } td, th { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: right; }
    td:first-child, th:first-child, td.text { text-align: left; }
    .mode-backoff { color: #b60; } .mode-paused { color: #06c; } .mode-suspended { color: #b00; }
    #error { color: #b00; } .ok { color: #070; } .bad { color: #b00; }
    button { font-size: 12px; }
    </style></head><body>
    <h1>Peregrine monitor</h1>
    <div>backend <span id="backend">?</span> · <span id="threads">?</span> loop(s) · up <span id="uptime">0</span> s ·
      updated <span id="polls">0</span>× · <button id="toggle">Pause updates</button>
      · token <input id="token" type="password" size="24" placeholder="http-mgmt-token-file">
      <span id="error"></span></div>
    <h2>Totals</h2>
    <div class="totals">
      <div class="card">injected <b id="received">0</b><small><span id="rate-received">0</span>/s</small></div>
      <div class="card">delivered <b id="delivered">0</b><small><span id="rate-delivered">0</span>/s</small></div>
      <div class="card">deferred <b id="deferrals">0</b><small><span id="rate-deferrals">0</span>/s</small></div>
      <div class="card">bounced <b id="bounced">0</b><small><span id="rate-bounced">0</span>/s</small></div>
      <div class="card">queued <b id="queued">0</b><small>ready <span id="ready">0</span> · delayed <span id="delayed">0</span></small></div>
      <div class="card">connections <b id="conn-out">0</b><small>out · <span id="conn-in">0</span> in</small></div>
      <div class="card">spool <b id="spool-state">?</b><small id="spool-detail"></small></div>
    </div>
    <h2>Queues by size (<span id="queue-count">0</span>)</h2>
    <table id="queues"><thead><tr><th>queue</th><th>mode</th><th>ready</th><th>delayed</th><th>conn</th>
      <th>delivered</th><th>bounced</th><th>deferred</th><th class="text">last reply</th><th></th></tr></thead><tbody></tbody></table>
    <h2>Connections per VMTA</h2><table id="vmtas"><tbody></tbody></table>
    <h2>Connections per domain</h2><table id="domains"><tbody></tbody></table>
    <h2>Top deferral reasons (last reply of the queues that have deferrals)</h2><table id="reasons"><tbody></tbody></table>
    <script>
    (function () {
      'use strict';
      var polls = 0, paused = false, previous = null;
      var tokenInput = document.getElementById('token');
      var fromFragment = /(?:^#|&)token=([^&]+)/.exec(location.hash);
      if (fromFragment) {
        sessionStorage.setItem('peregrine-token', decodeURIComponent(fromFragment[1]));
        history.replaceState(null, '', location.pathname);
      }
      tokenInput.value = sessionStorage.getItem('peregrine-token') || '';
      tokenInput.addEventListener('change', function () { sessionStorage.setItem('peregrine-token', tokenInput.value); });
      function $(id) { return document.getElementById(id); }
      function text(id, v) { $(id).textContent = String(v); }
      function cell(row, v, cls) { var td = document.createElement('td'); td.textContent = String(v); if (cls) td.className = cls; row.appendChild(td); return td; }
      function modeOf(q) {
        if (q.paused) return 'paused';
        if (q.suspendedSeconds > 0) return 'suspended';
        return q.mode;
      }
      function fill(tableId, pairs) {
        var body = $(tableId).tBodies[0]; body.textContent = '';
        pairs.forEach(function (p) { var r = body.insertRow(); cell(r, p[0], 'text'); cell(r, p[1]); });
      }
      function act(action, queue, button) {
        button.disabled = true;
        fetch('/queues/' + action, { method: 'POST', headers: { 'Content-Type': 'application/json',
              'Authorization': 'Bearer ' + (sessionStorage.getItem('peregrine-token') || tokenInput.value) },
              body: JSON.stringify({ queue: queue }) })
          .then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
          .then(function (res) {
            var out = $('error');
            out.textContent = res[0] === 200 ? '' : (action + ' ' + queue + ': ' + (res[1].error || res[0]));
            document.body.setAttribute('data-last-action', action + ' ' + queue + ' ' + res[0] + ' matched ' + (res[1].matched === undefined ? '-' : res[1].matched));
            poll();
          })
          .catch(function (e) { $('error').textContent = String(e); })
          .finally(function () { button.disabled = false; });
      }
      function render(status, queues, now) {
        text('backend', status.backend); text('threads', status.threads); text('uptime', Math.floor(status.uptimeSeconds));
        ['received', 'delivered', 'deferrals', 'bounced'].forEach(function (k) {
          text(k, status[k]);
          if (previous) {
            var dt = (now - previous.at) / 1000;
            text('rate-' + k, dt > 0 ? Math.max(0, Math.round((status[k] - previous.status[k]) / dt)) : 0);
          }
        });
        text('ready', status.queued.ready); text('delayed', status.queued.delayed);
        text('queued', status.queued.ready + status.queued.delayed);
        text('conn-out', status.connections.outbound); text('conn-in', status.connections.inbound);
        var spool = status.spool || {};
        var state = $('spool-state'); state.textContent = spool.state || '?';
        state.className = spool.state === 'ok' ? 'ok' : 'bad';
        text('spool-detail', (spool.streams || []).length + ' stream(s)' + (spool.reason ? ': ' + spool.reason : ''));
        queues.sort(function (a, b) { return (b.ready + b.delayed) - (a.ready + a.delayed) || (a.queue < b.queue ? -1 : 1); });
        text('queue-count', queues.length);
        var body = $('queues').tBodies[0]; body.textContent = '';
        var vmtas = {}, domains = {}, reasons = {};
        queues.forEach(function (q) {
          var r = body.insertRow(); r.setAttribute('data-queue', q.queue);
          var mode = modeOf(q);
          cell(r, q.queue, 'text'); cell(r, mode, 'mode mode-' + mode); cell(r, q.ready); cell(r, q.delayed); cell(r, q.connections);
          cell(r, q.delivered); cell(r, q.bounced); cell(r, q.deferred); cell(r, (q.lastReply || '').slice(0, 80), 'text');
          var b = document.createElement('button');
          var action = q.paused ? 'resume' : 'pause';
          b.textContent = q.paused ? 'Resume' : 'Pause';
          b.setAttribute('data-action', action); b.setAttribute('data-queue', q.queue);
          b.addEventListener('click', function () { act(action, q.queue, b); });
          r.insertCell().appendChild(b);
          var domain = q.queue.split('/')[0], vmta = q.vmta || q.queue.split('/')[1] || '';
          vmtas[vmta] = (vmtas[vmta] || 0) + q.connections;
          domains[domain] = (domains[domain] || 0) + q.connections;
          if (q.deferred > 0 && q.lastReply) reasons[q.lastReply] = (reasons[q.lastReply] || 0) + q.deferred;
        });
        function sorted(o) { return Object.keys(o).map(function (k) { return [k, o[k]]; }).sort(function (a, b) { return b[1] - a[1]; }); }
        fill('vmtas', sorted(vmtas));
        fill('domains', sorted(domains).filter(function (p) { return p[1] > 0; }).slice(0, 20));
        fill('reasons', sorted(reasons).slice(0, 10));
        previous = { status: status, at: now };
        polls += 1; text('polls', polls);
        document.body.setAttribute('data-polls', String(polls));
      }
      function get(path) { return fetch(path, { headers: { 'Accept': 'application/json' } }).then(function (r) { return r.json(); }); }
      function poll() {
        return Promise.all([get('/status'), get('/queues')]).then(function (res) {
          render(res[0], res[1].queues || [], Date.now());
          $('error').textContent = '';
        }).catch(function (e) { $('error').textContent = 'cannot reach the daemon: ' + e; });
      }
      $('toggle').addEventListener('click', function () {
        paused = !paused; $('toggle').textContent = paused ? 'Resume updates' : 'Pause updates';
      });
      poll();
      setInterval(function () { if (!paused) poll(); }, 1000);
    })();
    </script>
    </body></html>
    """#
}
