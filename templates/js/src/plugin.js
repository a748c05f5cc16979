// {{name}}: a warden plugin in JavaScript. It lists mailboxes (display name and address);
// `--limit N` (default 10) bounds how many.
import { Args, PluginError, log, plugin, stream } from 'warden-sdk';

export const run = plugin((words) => {
  const args = new Args(words);
  const limit = args.integer('limit') ?? 10;
  args.finish();
  if (limit < 1) throw new PluginError('--limit must be at least 1');

  const rows = [];
  for (const mailbox of stream('Get-Mailbox', { ResultSize: limit })) {
    rows.push({ DisplayName: mailbox.DisplayName, PrimarySmtpAddress: mailbox.PrimarySmtpAddress });
  }
  log.info(`listed ${rows.length} mailboxes`);
  return rows;
});
