curl \
  -H 'Accept:application/json' \
  -H 'Content-Type: application/json' \
  -H 'Authorization: Bearer BEARER_TOKEN' \
  'https://api.notimation.com/api/v1/phone_number/COUNTRY/NUMBER'
