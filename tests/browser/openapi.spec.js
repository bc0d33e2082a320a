// The admin API's OpenAPI document, as served, is a valid OpenAPI document by the specification's
// own JSON schema (an offline validator), so clients and generators can rely on it.
const { test, expect } = require('@playwright/test');

test('the served OpenAPI document is valid OpenAPI 3.1', async ({ request }) => {
  const response = await request.get('/openapi.json');
  expect(response.status()).toBe(200);
  const doc = await response.json();
  const { Validator } = await import('@seriousme/openapi-schema-validator');
  const validator = new Validator();
  const result = await validator.validate(doc);
  expect(result.errors || [], JSON.stringify(result.errors, null, 2)).toEqual([]);
  expect(result.valid).toBe(true);
  expect(validator.version).toBe('3.1');
  expect(Object.keys(doc.paths).length).toBeGreaterThanOrEqual(19);
});
