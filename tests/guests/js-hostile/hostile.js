// A hostile JavaScript guest (tests/all/js_guests.rs): each mode tries to get past a limit or
// the policy; the host must stop it and say which limit, or refuse the call with a typed error.
//   spin      an endless loop: stopped at the grant's CPU limit (fuel / epoch deadline)
//   grow      allocates until something gives: stopped at the run's memory limit
//   refused   calls a cmdlet the grant does not give: reports the CallError it got, as JSON
import { CallError, invoke, plugin } from 'warden-sdk';

export const run = plugin(([mode]) => {
  switch (mode) {
    case 'spin': {
      let n = 0;
      for (;;) n = (n + 1) % 1000003;
    }
    case 'grow': {
      const hoard = [];
      for (;;) hoard.push(new Uint8Array(1 << 20).fill(7));
    }
    case 'refused':
      try {
        invoke('Remove-Mailbox', { Identity: 'stefanmeyer@contoso.onmicrosoft.com', Confirm: false });
        return { refused: false };
      } catch (e) {
        if (!(e instanceof CallError)) throw e;
        return { refused: true, error: e, message: e.message, isTransient: e.isTransient() };
      }
    default:
      throw new Error(`unknown mode ${mode}`);
  }
});
