// Store, search and retrieve one instance with the JavaScript dicomweb-client (the library OHIF uses).
//
//   node tests/e2e/js/dicomweb_roundtrip.js BASE_URL FILE.dcm OUT.dcm
//
// Node has no XMLHttpRequest, which dicomweb-client uses: xhr2 provides it.  A bearer token is sent
// when DICOMWEB_TOKEN is set.  Prints a JSON summary (the UIDs each step returned); the retrieved
// instance is written to OUT.dcm.  Exits 1 with the error on stderr when a step fails.
'use strict';

const fs = require('fs');
global.XMLHttpRequest = require('xhr2');
const { api } = require('dicomweb-client');

const TAGS = { study: '0020000D', series: '0020000E', sop: '00080018', patientId: '00100020' };

function value(dataset, tag) {
  const element = dataset[tag];
  return element && element.Value ? element.Value[0] : undefined;
}


async function main() {
  const [baseUrl, input, output] = process.argv.slice(2);
  if (!baseUrl || !input || !output) {
    throw new Error('usage: dicomweb_roundtrip.js BASE_URL FILE.dcm OUT.dcm');
  }
  const headers = process.env.DICOMWEB_TOKEN ? { Authorization: `Bearer ${process.env.DICOMWEB_TOKEN}` } : {};
  const client = new api.DICOMwebClient({ url: baseUrl, headers });
  const bytes = fs.readFileSync(input);
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);

  // STOW-RS: the answer lists the stored instance (00081199 ReferencedSOPSequence).
  const stowAnswer = await client.storeInstances({ datasets: [buffer] });
  const answer = typeof stowAnswer === 'string' ? JSON.parse(stowAnswer) : stowAnswer;
  const referenced = answer && answer['00081199'] ? answer['00081199'].Value : [];
  const sop = referenced.length ? value(referenced[0], '00081155') : undefined;
  const retrieveUrl = referenced.length ? value(referenced[0], '00081190') : '';
  const match = /studies\/([^/]+)\/series\/([^/]+)\/instances\/([^/]+)$/.exec(retrieveUrl || '');
  if (!match) {
    throw new Error(`STOW answer names no instance: ${JSON.stringify(answer)}`);
  }
  const [, study, series] = match;

  // QIDO-RS
  const studies = await client.searchForStudies({ queryParams: { StudyInstanceUID: study } });
  const instances = await client.searchForInstances({ studyInstanceUID: study, seriesInstanceUID: series });

  // WADO-RS: metadata, then the instance itself
  const metadata = await client.retrieveInstanceMetadata({
    studyInstanceUID: study,
    seriesInstanceUID: series,
    sopInstanceUID: sop,
  });
  const instance = await client.retrieveInstance({
    studyInstanceUID: study,
    seriesInstanceUID: series,
    sopInstanceUID: sop,
  });
  fs.writeFileSync(output, Buffer.from(instance));

  process.stdout.write(
    JSON.stringify({
      stored: { study, series, sop },
      studies: studies.map((s) => value(s, TAGS.study)),
      instances: instances.map((i) => value(i, TAGS.sop)),
      metadata: metadata.map((m) => ({
        study: value(m, TAGS.study),
        series: value(m, TAGS.series),
        sop: value(m, TAGS.sop),
        patientId: value(m, TAGS.patientId),
      })),
      retrievedBytes: instance.byteLength,
    }) + '\n',
  );
}

main().catch((error) => {
  const detail = error && error.request ? ` (HTTP ${error.request.status} ${error.request.responseURL || ''})` : '';
  process.stderr.write(`${(error && error.stack) || error}${detail}\n`);
  process.exit(1);
});
