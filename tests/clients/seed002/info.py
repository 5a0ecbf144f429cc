import requests

url = "https://sms.tinsight.tech/apiv2/sms/?id=SMS0000001"

headers = {
    'Authorization': 'Token xxxxxxxxxxxxxxxxxxxxxxxxx'
}

response = requests.request("GET", url, headers=headers)

print(response.text)
