curl \
  -H 'Accept:application/json' \
  -H 'Content-Type: application/json' \
  -H 'Authorization: Bearer BEARER_TOKEN' \
  -d '{"recipient":1155554444,"message":"Hello!"}' \
  -X POST \
  'https://api.notimation.com/api/v1/sms'
