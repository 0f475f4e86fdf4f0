// SPDX-License-Identifier: Apache-2.0
// aedes (the MQTT broker in Node.js) behind Node's own TLS server with mutual TLS, for
// test-broker-aedes.py: node aedes-broker.js PORT CA CERT KEY. Prints "ready" once listening;
// logs client connects and errors to stderr.
'use strict'
const fs = require('fs')
const tls = require('tls')
const { Aedes } = (() => {
  const a = require('aedes')
  return { Aedes: a.Aedes || a }
})()

const [port, ca, cert, key] = process.argv.slice(2)
const broker = typeof Aedes.createBroker === 'function' ? null : Aedes()
const start = async () => {
  const b = broker || await Aedes.createBroker()
  b.on('client', (c) => console.error(`client ${c.id} connected`))
  b.on('clientDisconnect', (c) => console.error(`client ${c.id} disconnected`))
  b.on('clientError', (c, e) => console.error(`client ${c ? c.id : '?'} error: ${e.message}`))
  b.on('connectionError', (c, e) => console.error(`connection error: ${e.message}`))
  const server = tls.createServer({
    key: fs.readFileSync(key),
    cert: fs.readFileSync(cert),
    ca: fs.readFileSync(ca),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2'
  }, b.handle)
  server.on('tlsClientError', (e) => console.error(`tls error: ${e.message}`))
  server.listen(Number(port), '127.0.0.1', () => console.log('ready'))
  process.on('SIGTERM', () => { server.close(); b.close(() => process.exit(0)) })
}
start().catch((e) => { console.error(e); process.exit(1) })
