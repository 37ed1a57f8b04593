// Publishes COUNT user-created events through the ingest API with Node's own fetch: one event
// per request over kept-alive connections, each under an Idempotency-Key of its own. Prints the
// answered ids as a JSON array; exits 1 at the first answer other than 202.
//
//   node publish.mjs BASE_URL TOKEN COUNT PREFIX   (the user object in SAMPLE_USER, as JSON)
const [baseUrl, token, count, prefix] = process.argv.slice(2);
const user = JSON.parse(process.env.SAMPLE_USER);
const ids = [];
for (let n = 0; n < Number(count); n++) {
  const response = await fetch(`${baseUrl}/v1/events`, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${token}`,
      "Content-Type": "application/json",
      "Idempotency-Key": `${prefix}-${n}`,
    },
    body: JSON.stringify({
      event: "reseller.user.created",
      data: { ...user, id: `${prefix}-${n}` },
    }),
  });
  const answer = await response.json();
  if (response.status !== 202) {
    console.error(`${response.status} ${JSON.stringify(answer)}`);
    process.exit(1);
  }
  ids.push(answer.id);
}
console.log(JSON.stringify(ids));
