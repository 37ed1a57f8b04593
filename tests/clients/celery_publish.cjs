// Publishes through Celery's protocol with celery-node: one webhooks.publish task per event,
// kwargs {event, data, idempotency_key}, on the deliveries queue. Prints the task ids as JSON.
//
//   node celery_publish.cjs REDIS_URL QUEUE COUNT PREFIX   (the user object in SAMPLE_USER)
// The last task sent is a bad one (an unknown event type), which the worker must refuse.
const { randomUUID } = require("node:crypto");
const celery = require("celery-node");

// celery-node's own message, published and awaited (sendTask does not wait for the broker).
async function send(client, queue, kwargs) {
  const id = randomUUID();
  const message = client.createTaskMessage(id, "webhooks.publish", [], kwargs);
  await client.broker.publish(message.body, "", queue, message.headers, message.properties);
  return id;
}

async function main() {
  const [redisUrl, queue, count, prefix] = process.argv.slice(2);
  const user = JSON.parse(process.env.SAMPLE_USER);
  const client = celery.createClient(redisUrl, redisUrl, queue);
  await client.isReady();
  const ids = [];
  for (let n = 0; n < Number(count); n++) {
    const kwargs = {
      event: "reseller.user.created",
      data: { ...user, id: `${prefix}-${n}` },
      idempotency_key: `${prefix}-${n}`,
    };
    ids.push(await send(client, queue, kwargs));
  }
  const bad = { event: "reseller.user.removed", data: { ...user, id: `${prefix}-bad` } };
  ids.push(await send(client, queue, bad));
  await client.disconnect();
  console.log(JSON.stringify(ids));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
