// MLLP peer for `router bench`: @medplum/hl7 frames and parses each message and answers AA
// (Hl7Message.buildAck), storing nothing. Listens on 127.0.0.1:<port>; prints "listening <port>".
//   node server.js <port>
import net from 'node:net';
import { Hl7Connection } from '@medplum/hl7';

const port = Number(process.argv[2] || 0);
const server = net.createServer((socket) => {
  const conn = new Hl7Connection(socket);
  conn.addEventListener('message', (event) => event.connection.send(event.message.buildAck()));
  conn.addEventListener('error', () => socket.destroy());
});
server.listen(port, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
