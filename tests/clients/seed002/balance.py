import requests

url = "https://sms.tinsight.tech/apiv2/balance"

headers = {
    'Authorization': 'Token xxxxxxxxxxxxxxxxxxxxxxxxx'
}

response = requests.request("GET", url, headers=headers, data=payload)

print(response.text)
