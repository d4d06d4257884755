// An Express app routing the way Express apps do (its router on the raw
// pathname, case-insensitive by default), for the differential path test:
// it answers which of its handlers served the request. Usage: node app.js PORT
'use strict';
const express = require('express');

const app = express();
const served = (handler) => (req, res) =>
  res.json({ handler, router: 'express', path: req.path });

// Regular expressions: the same meaning in Express 4 and 5.
app.all(/^\/debug\/pprof(?:\/.*)?$/i, served('protected'));
app.all(/^\/admin(?:\/.*)?$/i, served('protected'));
app.all(/^\/private(?:\/.*)?$/i, served('private'));
app.all(/^\/t\/x(?:\/.*)?$/i, served('tenant_x'));
app.all(/^\/fast(?:\/.*)?$/i, served('fast'));
app.all(/.*/, served('other'));

app.listen(Number(process.argv[2]), '127.0.0.1');
