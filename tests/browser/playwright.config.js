// Headless Debian Chromium (the machine's /usr/bin/chromium: Playwright's own browser download
// is not used). The flags keep Chromium off the network it would otherwise call home to.
const { defineConfig } = require('@playwright/test');

const artifacts = process.env.CRM_SYNC_BROWSER_ARTIFACTS || 'test-results';

module.exports = defineConfig({
  testDir: '.',
  testMatch: '*.spec.js',
  timeout: 180_000,
  expect: { timeout: 20_000 },
  retries: 0,
  workers: 1,
  reporter: [['list']],
  outputDir: `${artifacts}/playwright`,
  use: {
    baseURL: process.env.ADMIN_URL,
    headless: true,
    screenshot: 'only-on-failure',
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    },
  },
});
